import pytest
import torch
from torch.testing import assert_close

from verity.algo.advantages import pass_at_k_advantages
from verity.algo.config import AlgoConfig
from verity.algo.control import AdaptiveKLController, EntropyController, PassAtKGuard, RunningBaseline
from verity.algo.objective import compute_advantages
from verity.algo.state import AlgoState


def test_adaptive_kl_moves_toward_target_with_clipped_error() -> None:
    ctl = AdaptiveKLController(0.1, target=0.05, horizon=100)
    assert ctl.update(kl=1.0, n_samples=10) == pytest.approx(0.1 * (1 + 0.2 * 0.1))  # error clipped at +0.2
    ctl = AdaptiveKLController(0.1, target=0.05, horizon=100)
    assert ctl.update(kl=0.04, n_samples=10) == pytest.approx(0.1 * (1 - 0.2 * 0.1))
    fixed = AdaptiveKLController(0.1)
    assert fixed.update(kl=5.0, n_samples=10) == 0.1


def test_entropy_controller_coef_mode_stays_in_bounds() -> None:
    ctl = EntropyController(0.0, low=0.5, high=1.0, step=0.01, max_coef=0.015)
    ctl.update(0.2)
    assert ctl.coef == pytest.approx(0.01)
    ctl.update(0.2)
    assert ctl.coef == pytest.approx(0.015)  # capped
    ctl.update(0.7)
    assert ctl.coef == pytest.approx(0.015)  # inside the band: unchanged
    ctl.update(2.0)
    ctl.update(2.0)
    assert ctl.coef == pytest.approx(0.0)  # never negative


def test_entropy_controller_mask_mode_has_hysteresis() -> None:
    ctl = EntropyController(0.0, low=0.5, high=1.0, mode="mask")
    ctl.update(1.5)
    assert ctl.negative_weight == 0.0
    ctl.update(0.7)
    assert ctl.negative_weight == 0.0  # still inside the band: the last decision holds
    ctl.update(0.3)
    assert ctl.negative_weight == 1.0


def test_running_baseline_hand_computed_over_two_batches() -> None:
    base = RunningBaseline(decay=0.5)
    first = base.advantages(["a", "a", "b"], torch.tensor([1, 0, 1]))  # integer rewards stay fractional below
    assert first.dtype == torch.float32 and first.tolist() == [1.0, 0.0, 1.0]  # nothing seen yet: baseline 0
    # first batch: each key starts from its batch mean; the global mean is 2/3 over three rewards
    assert base.means == pytest.approx({"a": 0.5, "b": 1.0})
    assert (base.global_mean, base.count) == (pytest.approx(2 / 3), 3)
    second = base.advantages(["a", "c", "b", "c"], torch.tensor([1, 0, 0, 1]))
    assert second.tolist() == pytest.approx([1 - 0.5, 0 - 2 / 3, 0 - 1.0, 1 - 2 / 3])  # c: unseen, global mean
    # a: 0.5 * 0.5 + 0.5 * 1; b: 0.5 * 1 + 0.5 * 0; c: prior 2/3 (global), batch mean 1/2 -> 1/3 + 1/4
    assert base.means == pytest.approx({"a": 0.75, "b": 0.5, "c": 7 / 12})
    assert (base.global_mean, base.count) == (pytest.approx(4 / 7), 7)
    assert base.baseline(["d"]).tolist() == pytest.approx([4 / 7])


def test_running_baseline_ignores_the_order_of_samples() -> None:
    generator = torch.Generator().manual_seed(0)
    batches = [
        (["x", "y", "x", "z", "x", "y"], torch.rand(6, generator=generator)),
        (["y", "x", "w", "y", "x"], torch.rand(5, generator=generator)),
    ]
    reference = RunningBaseline(decay=0.9)
    expected = [reference.advantages(keys, rewards) for keys, rewards in batches]
    for _ in range(5):
        base = RunningBaseline(decay=0.9)
        for (keys, rewards), want in zip(batches, expected, strict=True):
            order = torch.randperm(len(keys), generator=generator)
            got = base.advantages([keys[i] for i in order], rewards[order])
            assert torch.equal(got, want[order])
        assert base.state_dict() == reference.state_dict()


def test_running_baseline_same_rewards_in_either_order_end_equal() -> None:
    ones_first, zeros_first = RunningBaseline(decay=0.9), RunningBaseline(decay=0.9)
    ones_first.update(["k"] * 4, torch.tensor([1.0, 1.0, 0.0, 0.0]))
    zeros_first.update(["k"] * 4, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert ones_first.means == zeros_first.means == {"k": 0.5}  # one EMA step with the batch mean


def test_running_baseline_fallback_is_the_mean_of_all_rewards() -> None:
    base = RunningBaseline(decay=0.9)
    for step in range(100):
        base.update([f"item{step}"], torch.tensor([1.0 if step < 50 else 0.0]))
    assert base.baseline(["new"]).item() == pytest.approx(0.5)  # an EMA would have forgotten the early ones


def test_algo_state_round_trips_through_state_dict() -> None:
    cfg = AlgoConfig(kl_coef=0.1, kl_target=0.01, entropy_target_low=0.1, entropy_target_high=0.2)
    state = AlgoState(cfg)
    state.baseline.update(["x"], torch.tensor([1.0]))
    metrics = state.update({"kl": 1.0, "entropy": 0.05}, n_samples=100)
    assert metrics["algo/entropy_coef"] == pytest.approx(cfg.entropy_coef_step)
    restored = AlgoState(cfg)
    restored.load_state_dict(state.state_dict())
    assert restored.loss_kwargs() == state.loss_kwargs()
    assert restored.baseline.state_dict() == state.baseline.state_dict()
    keys, rewards = ["x", "unseen"], torch.tensor([0.0, 1.0])
    assert torch.equal(restored.baseline.advantages(keys, rewards), state.baseline.advantages(keys, rewards))


def test_pass_at_k_guard_doubles_k_only_after_a_real_drop() -> None:
    guard = PassAtKGuard(1, 16, "pass@4", drop=0.05, decay=0.5, patience=3)
    for _ in range(10):
        guard.update({"pass@4": 0.60})
    guard.update({"pass@4": 0.57})  # smoothed 0.585: within the allowed drop
    assert guard.k == 1
    guard.update({"pass@4": 0.50})  # smoothed 0.5425 < 0.60 - 0.05
    assert guard.k == 2
    guard.update({"pass@4": 0.30})  # patience: no second raise right after the first
    guard.update({"pass@4": 0.30})
    assert guard.k == 2
    for _ in range(3):  # after patience the best restarts from the current level, then it must fall again
        guard.update({"pass@4": 0.30})
    assert guard.k == 2
    for value in (0.1, 0.1, 0.1):
        guard.update({"pass@4": value})
    assert guard.k == 4
    restored = PassAtKGuard(1, 16, "pass@4", drop=0.05)
    restored.load_state_dict(guard.state_dict())
    assert restored.state_dict() == guard.state_dict()


def test_pass_at_k_guard_stops_at_the_group_size_and_ignores_other_metrics() -> None:
    guard = PassAtKGuard(8, 16, "pass@4", drop=0.05, decay=0.0, patience=1)
    for value in (0.9, 0.5, 0.9, 0.5, 0.9, 0.5):
        guard.update({"pass@4": value, "pass@8": 0.0})
    assert guard.k == 16
    off = PassAtKGuard(2, 16, "pass@4", drop=None, decay=0.0, patience=1)
    for value in (0.9, 0.1, 0.9, 0.1):
        off.update({"pass@4": value})
    assert off.k == 2


def test_the_pass_k_estimator_trains_with_the_guards_k() -> None:
    cfg = AlgoConfig(advantage="pass_k", pass_k=1, pass_k_guard=0.05)
    state = AlgoState(cfg, group_size=8, watch_k=4)
    state.pass_k.k = 4
    correct = torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 0])
    groups, mask = torch.zeros(8, dtype=torch.long), torch.ones(8, 2)
    adv = compute_advantages(cfg, correct, groups, mask, state=state)
    assert_close(adv[:, 0], pass_at_k_advantages(correct, groups, k=4).float())
    assert state.update({"pass@4": 0.5}, 8)["algo/pass_k"] == 4.0
    assert "algo/pass_k" not in AlgoState(AlgoConfig()).update({}, 8)


def test_the_guard_needs_the_pass_k_estimator() -> None:
    with pytest.raises(ValueError, match=r"algo\.advantage=pass_k"):
        AlgoConfig(pass_k_guard=0.05)


def test_the_pass_k_estimator_refuses_a_kl_in_the_reward() -> None:
    cfg = AlgoConfig(advantage="pass_k", pass_k=2, kl_coef=0.1, kl_in="reward")
    logprobs = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="kl_in=loss"):
        compute_advantages(
            cfg,
            torch.tensor([1.0, 0, 1, 0]),
            torch.zeros(4, dtype=torch.long),
            torch.ones(4, 2),
            old_logprobs=logprobs,
            ref_logprobs=logprobs - 0.1,
        )
