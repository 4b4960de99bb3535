"""Step splitting, the exact running-sum step checker, strict verdict parsing, format constraints, and step
scores and batched verifiers inside a composed reward and the worker pool."""

import pytest

from verity.rewards.compose import Component, ComposedReward
from verity.rewards.config import RewardConfig
from verity.rewards.executor import RewardExecutor
from verity.rewards.judging import format_violation, numbered_steps, parse_step_verdicts, parse_verdict
from verity.rewards.steps import aggregate_steps, split_steps, sum_step_labels, sum_steps
from verity.types import Item

TERMS = [3, 5, 8]
GOOD = "3+5=8\n8+8=16\n<answer>16</answer>"


def test_split_steps_by_lines_and_by_pattern() -> None:
    assert split_steps("a\n\n bc\n") == [(0, 1), (3, 6)]
    assert split_steps("x; y;z", r";\s*") == [(0, 1), (3, 4), (5, 6)]


def test_sum_step_labels_are_local() -> None:
    assert sum_step_labels(GOOD, TERMS) == [(5, True), (12, True), (32, True)]
    # wrong sum in step 1; step 2 correctly continues from the wrong value; the answer repeats it
    text = "3+5=9\n9+8=17\n<answer>17</answer>"
    assert [ok for _, ok in sum_step_labels(text, TERMS)] == [False, True, True]
    # wrong operand, a line that is no step, an answer that is not the last result
    text = "3+6=9\nso\n<answer>5</answer>"
    assert [ok for _, ok in sum_step_labels(text, TERMS)] == [False, False, False]


def test_sum_steps_value_is_min_and_needs_every_step() -> None:
    score = sum_steps(GOOD, TERMS)
    assert score.value == 1.0 and [v for _, v in score.steps] == [1.0, 1.0, 1.0]
    assert sum_steps("3+5=8\n<answer>8</answer>", TERMS).value == 0.0  # one step short
    assert sum_steps("3+5=8\n<answer>8</answer>", TERMS, aggregate="mean").value == pytest.approx(2 / 3)
    assert aggregate_steps([1.0, 0.0, 1.0], "last") == 1.0 and aggregate_steps([], "min") == 0.0


def test_parse_verdict_is_strict() -> None:
    labels = {"CORRECT": 1.0, "INCORRECT": 0.0}
    assert parse_verdict("the sum is right\nVerdict: CORRECT", labels) == 1.0
    assert parse_verdict("Verdict: INCORRECT\n", labels) == 0.0
    assert parse_verdict("Verdict: correct", labels) is None  # case-sensitive
    assert parse_verdict("Verdict: CORRECT\nVerdict: CORRECT", labels) is None  # twice
    assert parse_verdict("Verdict: CORRECT\nmore text", labels) is None  # not the last line
    assert parse_verdict("CORRECT", labels) is None


def test_parse_step_verdicts_needs_one_mark_per_step() -> None:
    assert parse_step_verdicts(" + - +\nextra", 3) == [1.0, 0.0, 1.0]
    assert parse_step_verdicts("+ -", 3) is None
    assert parse_step_verdicts("+ ? +", 3) is None
    assert parse_step_verdicts("", 0) == []


def test_format_constraints() -> None:
    assert format_violation(GOOD) is None
    assert format_violation(GOOD + "\n<answer>1</answer>") == "2 final answers (exactly one allowed)"
    assert format_violation(GOOD + "\n2+2=4") == "text after the final answer"
    assert format_violation("3+5=8\n3+5=8\n<answer>8</answer>") == "a step is repeated word for word"
    assert format_violation(GOOD, max_steps=2) == "3 steps (from 1 to 2 allowed)"
    assert format_violation("2+++<answer>9</answer>", min_steps=3) == "1 steps (from 3 to 32 allowed)"
    form = r"\d+\+\d+=\d+|<answer>\d+</answer>"
    assert format_violation(GOOD, step_pattern=form) is None
    assert format_violation("3+5=8\n8+8=1x\n<answer>16</answer>", step_pattern=form) == (
        "a step does not have the required form"
    )
    assert numbered_steps("a\nb") == "1. a\n2. b"


ITEM = Item("1", "t", "p", "16", meta={"terms": TERMS})


def test_composed_reward_scales_step_scores_by_weight_and_gate() -> None:
    reward = ComposedReward([Component("steps", "sum_steps", 0.5)])
    score = reward(ITEM, "3+5=8\n8+8=15\n<answer>15</answer>")
    assert score.value == 0.0 and score.steps == ((5, 0.5), (12, 0.0), (32, 0.5))
    gated = ComposedReward([Component("acc", "accuracy"), Component("steps", "sum_steps", gate="acc")])
    assert all(v == 0.0 for _, v in gated(ITEM, "3+5=8\n8+8=15\n<answer>15</answer>").steps)


def test_two_step_scorers_are_a_failure() -> None:
    reward = ComposedReward([Component("a", "sum_steps"), Component("b", "fixture_verifiers:step_scores")])
    score = reward(ITEM, GOOD)
    assert score.steps == () and "at most one verifier may score steps" in (score.reason or "")


def test_batched_verifier_sees_the_pool_batches() -> None:
    cfg = RewardConfig(verifiers=["fixture_verifiers:batch_size_seen"], workers=1, batch_size=4)
    with RewardExecutor(cfg) as ex:
        scores = ex.score([ITEM] * 6, ["x"] * 6)
    assert [s.value for s in scores] == [4.0, 4.0, 4.0, 4.0, 2.0, 2.0]
    in_process = RewardConfig(verifiers=["fixture_verifiers:batch_size_seen"], in_process=True)
    with RewardExecutor(in_process) as ex:
        assert [s.value for s in ex.score([ITEM] * 3, ["x"] * 3)] == [3.0] * 3


def test_batched_verifier_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"no setting\(s\) \['scale'\].*offset"):
        ComposedReward([Component("b", "fixture_verifiers:batch_size_seen", settings={"scale": 2})])
