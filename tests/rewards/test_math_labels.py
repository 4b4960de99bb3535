import pytest

from verity.rewards.labels import classification, multiple_choice, ndcg, ndcg_reward, parse_ranking
from verity.rewards.math import math_reward


@pytest.mark.parametrize(
    ("predicted", "reference", "expected"),
    [
        ("0.5", "\\frac{1}{2}", 1.0),
        ("\\boxed{\\frac12}", "1/2", 1.0),
        ("\\{2,1\\}", "\\{1,2\\}", 1.0),  # sets
        ("(x+1)^2", "x^2+2x+1", 1.0),  # equivalent expressions
        ("2^{1/2}", "\\sqrt{2}", 1.0),
        ("4", "3", 0.0),
        ("banana", "3", 0.0),
    ],
)
def test_math_reward(predicted: str, reference: str, expected: float) -> None:
    assert math_reward(f"<answer>{predicted}</answer>", answer=reference) == expected


def test_math_reward_guards() -> None:
    assert math_reward("<answer>1</answer><answer>2</answer>", answer="2") == 0.0
    assert math_reward("The answer is \\boxed{7}.", answer="7", extract=False) == 1.0
    assert math_reward("<answer>1</answer>", answer=None) is None


@pytest.mark.parametrize(
    ("answer_text", "reference", "choices", "expected"),
    [
        ("B", "B", None, 1.0),
        ("(b)", "B", None, 1.0),
        ("B. Paris", "B", None, 1.0),
        ("C", "B", None, 0.0),
        ("Paris", "B", ["Rome", "Paris"], 1.0),
        ("B", "Paris", ["Rome", "Paris"], 1.0),
        ("Berlin", "B", ["Rome", "Paris"], 0.0),
    ],
)
def test_multiple_choice(answer_text: str, reference: str, choices: list | None, expected: float) -> None:
    assert multiple_choice(f"<answer>{answer_text}</answer>", answer=reference, choices=choices) == expected


@pytest.mark.parametrize(
    ("answer_text", "labels", "expected"),
    [("Positive", None, 1.0), ("negative", None, 0.0), ("positive!", ["positive", "negative"], 0.0)],
)
def test_classification(answer_text: str, labels: list | None, expected: float) -> None:
    assert classification(f"<answer>{answer_text}</answer>", answer="positive", labels=labels) == expected


def test_ndcg_hand_computed() -> None:
    relevance = {"a": 3.0, "b": 1.0}
    # DCG of [b, a] = 1/log2(2) + 7/log2(3); ideal [a, b] = 7 + 1/log2(3).
    expected = (1.0 + 7.0 / 1.5849625007211563) / (7.0 + 1.0 / 1.5849625007211563)
    assert ndcg(["b", "a"], relevance) == pytest.approx(expected)
    assert ndcg(["a", "b"], relevance) == pytest.approx(1.0)
    assert ndcg(["c"], {"c": 0.0}) == 0.0


def test_ndcg_reward_repeats_gain_nothing() -> None:
    assert parse_ranking("[2] > [1] > [2]") == ["2", "1"]
    perfect = ndcg_reward("<answer>[1] > [2] > [3]</answer>", answer="1 > 2 > 3")
    repeated = ndcg_reward("<answer>[1] > [1] > [1]</answer>", answer="1 > 2 > 3")
    assert perfect == pytest.approx(1.0)
    assert repeated is not None and repeated < 1.0
