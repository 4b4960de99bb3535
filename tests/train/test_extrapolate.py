"""Extrapolation of the adapters' rank-1 trajectory (NExt): the math on hand-computed paths, the jumps a learner
makes on schedule, their checkpointing, and the configurations that cannot work."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable

import pytest
import torch
from helpers.run_files import final_weights
from test_lora import rewarded_batch, tiny_llama
from torch import nn

from verity.algo.config import AlgoConfig
from verity.algo.objective import PolicyObjective
from verity.config import Config, load_config
from verity.loop import train
from verity.model.config import LoraConfig
from verity.model.lora import apply_lora
from verity.schema import ConfigError
from verity.train.config import ExtrapolateConfig, TrainConfig
from verity.train.extrapolate import Trajectory, extrapolation_step, fit_polynomial, rank1_trajectory
from verity.train.learner import Learner

U = torch.tensor([0.6, 0.8])  # a unit direction
STEPS = torch.arange(5.0)  # t = 0..4
CURVE = STEPS + 0.5 * STEPS**2  # c(t) = t + t^2 / 2: 0, 1.5, 4, 7.5, 12


def test_rank1_recovers_the_direction_and_coefficients_of_a_noisy_path() -> None:
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(40, generator=gen)
    u /= u.norm()
    noise = torch.randn(6, 40, generator=gen) * 0.01
    noise -= (noise @ u)[:, None] * u  # off the direction only, so the true coefficients stay the projections
    c = torch.tensor([0.0, 1.0, 3.0, 2.0, 5.0, 8.0])
    found_u, found_c, share = rank1_trajectory(c[:, None] * u + noise)
    assert abs(float(found_u @ u.double())) > 0.9999
    torch.testing.assert_close(found_c, c.double() * torch.sign(found_u @ u.double()), atol=1e-3, rtol=0)
    assert found_c[-1] > 0  # the sign convention: the path ends on the positive side
    assert 0.999 < share < 1.0


def test_rank1_share_of_two_equal_orthogonal_moves_is_one_half() -> None:
    # Rows (0,0), (1,0), (0,1): singular values 1 and 1, so rank 1 explains half the squared norm.
    _, _, share = rank1_trajectory(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    assert share == pytest.approx(0.5)


def test_polynomial_fit_on_rescaled_time() -> None:
    # c = 3 - 2 s + 4 s^2 with s = (t - 10) / 6 at t = 10, 12, 14, 16: the fit recovers (3, -2, 4) exactly.
    t = torch.tensor([10.0, 12.0, 14.0, 16.0], dtype=torch.float64)
    s = (t - 10) / 6
    a = fit_polynomial(t, 3 - 2 * s + 4 * s**2, degree=2)
    torch.testing.assert_close(a, torch.tensor([3.0, -2.0, 4.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 3 points"):
        fit_polynomial(t[:2], s[:2], degree=2)


def test_quadratic_extrapolation_lands_on_the_hand_computed_point() -> None:
    # theta_t = (1, 1) + c(t) u. Two steps ahead of t = 4: c(6) = 6 + 18 = 24, so theta = (1, 1) + 24 (0.6, 0.8).
    theta = torch.tensor([1.0, 1.0]) + CURVE[:, None] * U
    move, share = extrapolation_step(STEPS, theta - theta[0], horizon=2, degree=2)
    torch.testing.assert_close((theta[-1] + move).float(), torch.tensor([15.4, 20.2]))
    assert share == pytest.approx(1.0)


def test_linear_extrapolation_undershoots_the_curved_path() -> None:
    # The least-squares line through (t, c) has slope Sxy / Sxx = 30 / 10 = 3, so it adds 3 x 2 = 6 along u
    # instead of 12: theta = (7.2, 9.6) + 6 (0.6, 0.8) + (1, 1).
    theta = torch.tensor([1.0, 1.0]) + CURVE[:, None] * U
    move, _ = extrapolation_step(STEPS, theta - theta[0], horizon=2, degree=1)
    torch.testing.assert_close((theta[-1] + move).float(), torch.tensor([11.8, 15.4]))


class Adapted(nn.Module):
    """Parameters named like peft's: ``layer.lora_A.weight`` and ``layer.lora_B.weight`` form one module."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Module()
        self.layer.lora_A = nn.Module()
        self.layer.lora_B = nn.Module()
        self.layer.lora_A.weight = nn.Parameter(torch.zeros(1))
        self.layer.lora_B.weight = nn.Parameter(torch.zeros(1))
        self.frozen = nn.Parameter(torch.zeros(3), requires_grad=False)


def test_trajectory_jumps_each_module_on_schedule_and_restarts_its_window() -> None:
    model = Adapted()
    trajectory = Trajectory(model, ExtrapolateConfig(enabled=True, every=4, history=5, horizon=2, degree=2))
    assert set(trajectory.groups) == {"layer"} and len(trajectory.groups["layer"]) == 2
    for step in range(1, 5):  # the module's two numbers follow (0.6, 0.8) c(t) from t = 0
        with torch.no_grad():
            model.layer.lora_A.weight.fill_(0.6 * float(CURVE[step]))
            model.layer.lora_B.weight.fill_(0.8 * float(CURVE[step]))
        jumped = trajectory.observe(step)
        assert (jumped is None) == (step < 4)
    assert jumped is not None
    assert jumped["extrapolate/rank1_share"] == pytest.approx(1.0)
    assert jumped["extrapolate/jump_norm"] == pytest.approx(24 - 12)
    assert model.layer.lora_A.weight.item() == pytest.approx(14.4)
    assert model.layer.lora_B.weight.item() == pytest.approx(19.2)
    assert [s for s, _ in trajectory.points] == [4] and trajectory.last_jump == 4
    assert float(trajectory.points[0][1]["layer.lora_A.weight"]) == pytest.approx(14.4)
    assert all(trajectory.observe(step) is None for step in range(5, 8))  # every=4: the next jump is at 8


def lora_learner(**extrapolate: object) -> Learner:
    model = apply_lora(tiny_llama(), LoraConfig(r=2, alpha=4, target_modules=["q_proj", "v_proj"]))
    train = TrainConfig(lr=5e-2, extrapolate=ExtrapolateConfig(**extrapolate))
    return Learner(model, train, PolicyObjective(AlgoConfig()), temperature=1.0, seed=0)


def adapters(learner: Learner) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in learner.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("optimizer", ["keep", "reset"])
def test_learner_jump_equals_the_extrapolation_of_its_own_steps(optimizer: str) -> None:
    # Steps 1 and 2 train as a plain learner's do; after step 3 the learner adds exactly the degree-1 move that
    # the points after steps 1, 2, 3 predict one step ahead, for each module.
    plain, jumping = (
        lora_learner(),
        lora_learner(enabled=True, every=3, history=3, horizon=1, degree=1, optimizer=optimizer),
    )
    batch = rewarded_batch()
    points = []
    for step in range(1, 4):
        assert plain.step(batch).get("extrapolate/applied") is None
        metrics = jumping.step(batch)
        assert metrics["extrapolate/applied"] == (1.0 if step == 3 else 0.0)
        points.append(adapters(plain))
    assert metrics["extrapolate/rank1_share"] > 0.5
    assert bool(jumping.optimizer.state) == (optimizer == "keep")
    t = torch.tensor([1.0, 2.0, 3.0])
    after = adapters(jumping)
    total = 0.0
    for key in {name.split(".lora_")[0] for name in points[0]}:
        names = [name for name in points[0] if name.startswith(key + ".lora_")]
        flat = [torch.cat([p[n].reshape(-1).double() for n in names]) for p in points]
        move, _ = extrapolation_step(t, torch.stack([f - flat[0] for f in flat]), horizon=1, degree=1)
        total += float((move * move).sum())
        landed = torch.cat([after[n].reshape(-1).double() for n in names])
        torch.testing.assert_close(landed, flat[-1] + move, atol=1e-5, rtol=1e-4)
    assert metrics["extrapolate/jump_norm"] == pytest.approx(math.sqrt(total), rel=1e-4)
    assert total > 0


def test_the_recorded_trajectory_is_checkpointed_with_the_learner() -> None:
    settings = {"enabled": True, "every": 3, "history": 3, "horizon": 2, "degree": 1}
    first, resumed = lora_learner(**settings), lora_learner(**settings)
    batch = rewarded_batch()
    for _ in range(2):
        first.step(batch)
    resumed.load_state_dict(copy.deepcopy(first.state_dict()))  # as a checkpoint file would: nothing shared
    assert [s for s, _ in resumed.trajectory.points] == [0, 1, 2]
    assert first.step(batch)["extrapolate/applied"] == resumed.step(batch)["extrapolate/applied"] == 1.0
    for name, value in adapters(first).items():
        torch.testing.assert_close(adapters(resumed)[name], value)


def test_a_checkpoint_without_a_trajectory_restarts_the_window_at_the_resumed_step() -> None:
    plain = lora_learner()
    plain.step(rewarded_batch())
    resumed = lora_learner(enabled=True, every=3, history=3, degree=1)
    resumed.load_state_dict(plain.state_dict())
    assert [s for s, _ in resumed.trajectory.points] == [1] and resumed.trajectory.last_jump == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.extrapolate.enabled=true"], "needs model.lora"),
        (["model.lora.r=4", "train.extrapolate.enabled=true", "train.strategy=fsdp2"], "train.strategy=single"),
        (["train.extrapolate.history=8", "train.extrapolate.every=5"], "every >= 7"),
        (["train.extrapolate.history=4", "train.extrapolate.degree=3"], "history >= 5"),
    ],
)
def test_configurations_that_cannot_extrapolate_are_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({}, overrides)


@pytest.mark.usefixtures("one_thread")
def test_a_resumed_run_jumps_where_an_uninterrupted_one_does(make_config: Callable[..., Config]) -> None:
    # Jumps after steps 3 and 6; the resumed run restarts after step 2, inside the first window, so its jumps
    # land on the uninterrupted run's only if the recorded points came back with the checkpoint.
    settings = [
        "model.lora.r=2",
        "model.lora.target_modules=[q_proj,v_proj]",
        "train.lr=5e-2",
        "train.extrapolate.enabled=true",
        "train.extrapolate.every=3",
        "train.extrapolate.history=3",
        "train.extrapolate.degree=1",
    ]
    straight = make_config(*settings, "train.steps=6", "name=straight")
    train(straight, quiet=True)
    train(make_config(*settings, "train.steps=2", "name=resumed"), quiet=True)
    resumed = make_config(*settings, "train.steps=6", "name=resumed")
    train(resumed, resume=True, quiet=True)
    rows = [r for r in map(json.loads, (straight.run_dir / "metrics.jsonl").open()) if "loss/policy" in r]
    assert [r["step"] for r in rows if r["extrapolate/applied"]] == [3, 6]
    expected, got = final_weights(straight.run_dir), final_weights(resumed.run_dir)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), f"{name} differs after resume"
