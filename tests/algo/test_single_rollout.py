"""The single_rollout estimator's running baseline (hand-computed over batches, order-free) and its state."""

import pytest
import torch

from verity.algo.config import AlgoConfig
from verity.algo.single_rollout import RunningBaseline
from verity.algo.state import AlgoState


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
    ones_first.fold(["k"] * 4, torch.tensor([1.0, 1.0, 0.0, 0.0]))
    zeros_first.fold(["k"] * 4, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert ones_first.means == zeros_first.means == {"k": 0.5}  # one EMA step with the batch mean


def test_running_baseline_fallback_is_the_mean_of_all_rewards() -> None:
    base = RunningBaseline(decay=0.9)
    for step in range(100):
        base.fold([f"item{step}"], torch.tensor([1.0 if step < 50 else 0.0]))
    assert base.baseline(["new"]).item() == pytest.approx(0.5)  # an EMA would have forgotten the early ones


def test_the_baseline_is_the_estimators_state_and_round_trips_through_the_algo_state() -> None:
    cfg = AlgoConfig(advantage="single_rollout", baseline_decay=0.5)
    state = AlgoState(cfg)
    state.estimator.fold(["x"], torch.tensor([1.0]))
    restored = AlgoState(cfg)
    restored.load_state_dict(state.state_dict())
    assert (
        restored.estimator.state_dict()
        == state.estimator.state_dict()
        == {"decay": 0.5, "means": {"x": 1.0}, "global_mean": 1.0, "count": 1}
    )
    keys, rewards = ["x", "unseen"], torch.tensor([0.0, 1.0])
    assert torch.equal(restored.estimator.advantages(keys, rewards), state.estimator.advantages(keys, rewards))
