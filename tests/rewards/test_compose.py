import math

import pytest

from verity.rewards.compose import Component, ComposedReward, checked_value
from verity.types import Item, Score

ITEM = Item("1", "arith", "2+2?", "4", meta={"bonus": 2.0})


def test_weighted_sum_keeps_components() -> None:
    reward = ComposedReward([Component("format", "format", 0.5), Component("accuracy", "accuracy", 2.0)])
    assert reward(ITEM, "<answer>4</answer>") == Score(2.5, None, {"format": 1.0, "accuracy": 1.0})
    assert reward(ITEM, "so <answer>4</answer>") == Score(2.0, None, {"format": 0.0, "accuracy": 1.0})


def test_gate_zeroes_gated_component_only() -> None:
    reward = ComposedReward(
        [Component("format", "format", 0.1), Component("accuracy", "accuracy", 1.0, gate="format")]
    )
    assert reward(ITEM, "<answer>4</answer>").value == pytest.approx(1.1)
    gated = reward(ITEM, "so <answer>4</answer>")
    assert gated.value == 0.0
    assert gated.components == {"format": 0.0, "accuracy": 1.0}


def test_settings_and_meta_reach_the_verifier() -> None:
    reward = ComposedReward([Component("echo", "fixture_verifiers:echo_setting", settings={"scale": 3.0})])
    assert reward(ITEM, "x").value == 6.0  # scale 3 * meta bonus 2


def test_user_function_without_kwargs_gets_only_what_it_names() -> None:
    reward = ComposedReward([Component("len", "fixture_verifiers:length_reward")])
    assert reward(ITEM, "abcd").value == 4.0


def test_unknown_setting_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"no setting\(s\) \['tolerance'\].*abs_tol"):
        ComposedReward([Component("num", "numeric_match", settings={"tolerance": 0.1})])


def test_failures_score_zero_with_reason() -> None:
    reward = ComposedReward(
        [Component("boom", "fixture_verifiers:boom"), Component("len", "fixture_verifiers:length_reward")]
    )
    score = reward(ITEM, "ab")
    assert score.value == 2.0
    assert score.reason == "boom: raised RuntimeError: verifier bug"
    assert score.components == {"boom": 0.0, "len": 2.0}


def test_unscorable_item() -> None:
    score = ComposedReward([Component("accuracy", "accuracy")])(Item("1", "t", "p", None), "<answer>1</answer>")
    assert score.value == 0.0
    assert score.reason is not None and score.reason.startswith("unscorable")


@pytest.mark.parametrize(
    ("result", "value", "failed"),
    [
        (1, 1.0, False),
        (True, 1.0, False),
        (0.25, 0.25, False),
        (None, None, False),
        (math.nan, 0.0, True),
        (math.inf, 0.0, True),
        ("1.0", 0.0, True),
        ([1.0], 0.0, True),
        (Score(0.5), 0.5, False),
        (Score(math.nan), 0.0, True),
    ],
)
def test_checked_value(result: object, value: float | None, failed: bool) -> None:
    got, reason = checked_value(result)
    assert got == value
    assert (reason is not None) == failed
