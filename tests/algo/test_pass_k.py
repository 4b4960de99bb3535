"""The pass_k estimator's module: its math (hand-computed values), its guard (state), its checks and settings."""

import pytest
import torch
from pydantic import ValidationError
from torch.testing import assert_close

from verity.algo.advantages import group_relative_advantages
from verity.algo.config import AlgoConfig
from verity.algo.objective import compute_advantages
from verity.algo.pass_k import PassAtKGuard, pass_at_k_advantages
from verity.algo.state import AlgoState
from verity.config import load_config
from verity.schema import ConfigError


def test_pass_at_k_hand_computed() -> None:
    # Group of 8 with 2 correct, k = 4: R = 1 - C(6,4)/C(8,4) = 1 - 15/70; a wrong sample's value is
    # 1 - C(5,3)/C(7,3) = 1 - 10/35.
    correct = torch.tensor([1, 0, 0, 1, 0, 0, 0, 0])
    adv = pass_at_k_advantages(correct, torch.zeros(8, dtype=torch.long), k=4, eps=0.0)
    r = 1 - 15 / 70
    s = (r * (1 - r)) ** 0.5
    assert adv[0].item() == pytest.approx((1 - r) / s)
    assert adv[1].item() == pytest.approx((1 - 10 / 35 - r) / s)
    assert adv.sum().item() == pytest.approx(0.0, abs=1e-6)  # a group's values average to its pass@k


def test_pass_at_k_with_k_1_is_grpo_with_the_population_std() -> None:
    correct = torch.tensor([1, 0, 0, 1, 0, 1, 1, 1, 1, 0])
    groups = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    unbiased = group_relative_advantages(correct.float(), groups, eps=0.0)
    assert_close(pass_at_k_advantages(correct, groups, k=1, eps=0.0), unbiased * (5 / (5 - 1)) ** 0.5)


def test_pass_at_k_pushes_the_majority_less_and_ignores_solved_groups() -> None:
    correct = torch.tensor([1] * 12 + [0] * 4 + [1] * 14 + [0] * 2)
    groups = torch.tensor([0] * 16 + [1] * 16)
    k1, k4 = pass_at_k_advantages(correct, groups, k=1), pass_at_k_advantages(correct, groups, k=4)
    # 12 of 16 correct: a prompt the group already solves at k = 4 moves the policy much less than at k = 1
    # (1 - R = 1/1820 at k = 4), in both directions.
    assert 0 < k4[0] < k1[0] / 10 and 0 > k4[12] > k1[12] / 10
    # 14 of 16 correct: every 4-subset holds a correct answer (n - c < k), so the group gives no signal.
    assert k4[16:].abs().max().item() == 0.0


def test_pass_at_k_is_exact_in_float64_where_the_two_ratios_nearly_cancel() -> None:
    # n = 32, c = 16, k = 16: 1 - R = 1/C(32,16) and the wrong sample's ratio C(15,15)/C(31,15) = 2/C(32,16), so
    # A_neg = (1/C - 2/C) / (s + eps) = -A_pos exactly.
    correct = torch.tensor([1.0] * 16 + [0.0] * 16, dtype=torch.float64)
    adv = pass_at_k_advantages(correct, torch.zeros(32, dtype=torch.long), k=16, eps=1e-6)
    p = 1 / 601080390
    a_pos = p / ((p * (1 - p)) ** 0.5 + 1e-6)  # 3.9812e-05
    assert adv.dtype == torch.float64
    assert adv[0].item() == pytest.approx(a_pos, rel=1e-12)
    assert adv[16].item() == pytest.approx(-a_pos, rel=1e-12)
    assert pass_at_k_advantages(correct.float(), torch.zeros(32, dtype=torch.long), k=16).dtype == torch.float32


def test_pass_at_k_signs_are_right_for_every_group_up_to_48() -> None:
    for n in range(2, 49):
        for c in range(1, n):
            for k in range(1, n - c + 1):  # groups where n - c >= k, so the group has a signal
                correct = torch.tensor([1.0] * c + [0.0] * (n - c), dtype=torch.float64)
                adv = pass_at_k_advantages(correct, torch.zeros(n, dtype=torch.long), k=k, eps=0.0)
                assert adv[0] > 0 and adv[-1] < 0, (n, c, k)


def test_pass_at_k_needs_k_samples_per_group() -> None:
    with pytest.raises(ValueError, match="at least k samples"):
        pass_at_k_advantages(torch.tensor([1, 0, 1]), torch.tensor([0, 0, 1]), k=2)


def test_pass_at_k_guard_doubles_k_only_after_a_real_drop() -> None:
    guard = PassAtKGuard(1, 16, "pass@4", drop=0.05, decay=0.5, patience=3)
    for _ in range(10):
        guard.update(0, {"pass@4": 0.60})
    guard.update(0, {"pass@4": 0.57})  # smoothed 0.585: within the allowed drop
    assert guard.k == 1
    guard.update(0, {"pass@4": 0.50})  # smoothed 0.5425 < 0.60 - 0.05
    assert guard.k == 2
    guard.update(0, {"pass@4": 0.30})  # patience: no second raise right after the first
    guard.update(0, {"pass@4": 0.30})
    assert guard.k == 2
    for _ in range(3):  # after patience the best restarts from the current level, then it must fall again
        guard.update(0, {"pass@4": 0.30})
    assert guard.k == 2
    for value in (0.1, 0.1, 0.1):
        guard.update(0, {"pass@4": value})
    assert guard.k == 4
    restored = PassAtKGuard(1, 16, "pass@4", drop=0.05)
    restored.load_state_dict(guard.state_dict())
    assert restored.state_dict() == guard.state_dict()


def test_pass_at_k_guard_stops_at_the_group_size_and_ignores_other_metrics() -> None:
    guard = PassAtKGuard(8, 16, "pass@4", drop=0.05, decay=0.0, patience=1)
    for value in (0.9, 0.5, 0.9, 0.5, 0.9, 0.5):
        guard.update(0, {"pass@4": value, "pass@8": 0.0})
    assert guard.k == 16
    off = PassAtKGuard(2, 16, "pass@4", drop=None, decay=0.0, patience=1)
    for value in (0.9, 0.1, 0.9, 0.1):
        off.update(0, {"pass@4": value})
    assert off.k == 2


def test_the_guard_keeps_k_below_the_group_size_so_groups_still_learn() -> None:
    # G = 8, k = 4: a fall in pass@4 raises k to 7 (not 8, where every group's advantages are 0). At k = 7 a
    # group with 1 of 8 correct has R = 1 - 1/8, s = sqrt(7)/8: A_pos = 1/sqrt(7), A_neg = (1/8 - 1/7) / s.
    run = load_config({}, ["algo.advantage=pass_k", "algo.pass_k=4", "algo.pass_k_guard=0.05", "eval.k=4"])
    state = AlgoState(run.algo, run)
    state.estimator.decay, state.estimator.patience = 0.0, 1
    for value in (0.9, 0.5, 0.9, 0.5, 0.9, 0.5):
        state.update({"pass@4": value}, 8)
    assert state.estimator.k == 7
    correct = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0], dtype=torch.float64)
    adv = pass_at_k_advantages(correct, torch.zeros(8, dtype=torch.long), k=7, eps=0.0)
    assert adv[0].item() == pytest.approx(1 / 7**0.5)
    assert adv[1].item() == pytest.approx(-1 / (7 * 7**0.5))


def test_k_equal_to_the_group_size_is_refused_with_the_reason() -> None:
    reason = r"algo.pass_k=8 must be below rollout.group_size=8.*every advantage is 0"
    with pytest.raises(ConfigError, match=reason):
        load_config({}, ["algo.advantage=pass_k", "algo.pass_k=8", "rollout.group_size=8"])
    assert load_config({}, ["algo.advantage=pass_k", "algo.pass_k=7", "rollout.group_size=8"]).algo.pass_k == 7


def test_the_pass_k_estimator_trains_with_the_guards_k() -> None:
    run = load_config(
        {}, ["algo.advantage=pass_k", "algo.pass_k=1", "algo.pass_k_guard=0.05", "rollout.group_size=8"]
    )
    state = AlgoState(run.algo, run)
    assert isinstance(state.estimator, PassAtKGuard) and (state.estimator.max_k, state.estimator.watch) == (
        7,
        "pass@4",
    )
    state.estimator.k = 4
    correct = torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 0])
    groups, mask = torch.zeros(8, dtype=torch.long), torch.ones(8, 2)
    adv = compute_advantages(run.algo, correct, groups, mask, state=state)
    assert_close(adv[:, 0], pass_at_k_advantages(correct, groups, k=4).float())
    assert state.update({"pass@4": 0.5}, 8)["algo/pass_k"] == 4.0
    assert "algo/pass_k" not in AlgoState(AlgoConfig()).update({}, 8)


def test_the_guards_raise_is_a_warning_of_the_run_and_its_state_is_checkpointed() -> None:
    run = load_config({}, ["algo.advantage=pass_k", "algo.pass_k=1", "algo.pass_k_guard=0.05", "eval.k=4"])
    state = AlgoState(run.algo, run)
    state.estimator.decay, state.estimator.patience = 0.0, 1
    for value in (0.60, 0.58):  # within the allowed drop
        state.update({"pass@4": value}, 8)
    assert state.take_warnings() == []
    assert state.update({"pass@4": 0.48}, 8)["algo/pass_k"] == 2.0
    (warning,) = state.take_warnings()
    assert warning.startswith("step 3: training pass@4 fell (now 0.480)") and "from 1 to 2" in warning
    assert state.take_warnings() == []
    resumed = AlgoState(run.algo, run)
    resumed.load_state_dict(state.state_dict())
    assert (resumed.steps, resumed.estimator.state_dict()) == (3, state.estimator.state_dict())


def test_the_guard_and_k_need_the_pass_k_estimator() -> None:
    with pytest.raises(ConfigError, match=r"'algo.pass_k_guard' is a setting of algo\.advantage=pass_k only"):
        load_config({}, ["algo.pass_k_guard=0.05"])
    with pytest.raises(ValidationError, match="pass_k"):
        AlgoConfig(advantage="grpo", pass_k=2)


def test_the_pass_k_estimator_refuses_a_kl_in_the_reward() -> None:
    with pytest.raises(ConfigError, match="kl_in=loss"):
        load_config({}, ["algo.advantage=pass_k", "algo.kl_coef=0.1", "algo.kl_in=reward"])


def test_fractional_correctness_is_refused_not_counted_one_way_and_credited_another() -> None:
    # [0.7, 0.7, 0, 0] once summed to 1 hit while both 0.7s got the correct sample's advantage.
    with pytest.raises(ValueError, match="correctness of 0 or 1"):
        pass_at_k_advantages(torch.tensor([0.7, 0.7, 0.0, 0.0]), torch.zeros(4, dtype=torch.long), k=2)
    # Through the estimator, rewards are thresholded first: both 0.7s are correct (c = 2 of n = 4, k = 2):
    # R = 1 - C(2,2)/C(4,2) = 5/6, s = sqrt(5)/6; A_pos = (1/6)/s = 1/sqrt(5); A_neg = (1/6 - C(1,1)/C(3,1))/s.
    cfg = load_config({}, ["algo.advantage=pass_k", "algo.pass_k=2", "rollout.group_size=4"]).algo
    rewards, groups = torch.tensor([0.7, 0.7, 0.0, 0.0]), torch.zeros(4, dtype=torch.long)
    adv = compute_advantages(cfg, rewards, groups, torch.ones(4, 1))[:, 0]
    s = 5**0.5 / 6
    assert_close(
        adv, torch.tensor([1 / 5**0.5, 1 / 5**0.5, (1 / 6 - 1 / 3) / s, (1 / 6 - 1 / 3) / s]), atol=1e-4, rtol=1e-4
    )


def test_k_must_fit_every_group_size_of_the_run() -> None:
    stage = {"data": {"stages": [{"name": "small", "group_size": 4}]}}
    with pytest.raises(ConfigError, match=r"algo.pass_k=4 must be below data.stages.0.group_size=4"):
        load_config(stage, ["algo.advantage=pass_k", "algo.pass_k=4", "rollout.group_size=8"])
    run = load_config(stage, ["algo.advantage=pass_k", "algo.pass_k=2", "algo.pass_k_guard=0.05", "eval.k=4"])
    assert AlgoState(run.algo, run).estimator.max_k == 3  # the stage's groups of 4 bound the guard
