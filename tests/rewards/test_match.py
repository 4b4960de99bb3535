import pytest

from verity.rewards.match import accuracy, exact_match, numeric_match
from verity.rewards.puzzles import reasoning_gym_verifier


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        ("<answer>42</answer>", "42", 1.0),
        ("<answer>42.0</answer>", "42", 1.0),  # numeric match
        ("<answer>1,000</answer>", "1000", 1.0),
        ("<answer>43</answer>", "42", 0.0),
        ("<answer>Paris</answer>", "paris", 1.0),  # normalized string match
        ("<answer>London</answer>", "Paris", 0.0),
        ("42", "42", 0.0),  # no answer tag
        ("<answer>41</answer><answer>42</answer>", "42", 0.0),  # hedging
        ("<answer>42", "42", 0.0),  # truncated
    ],
)
def test_accuracy_without_rg_entry(completion: str, answer: str, expected: float) -> None:
    assert accuracy(completion, answer=answer) == expected


def test_accuracy_cannot_score_without_reference() -> None:
    assert accuracy("<answer>1</answer>", answer=None) is None


@pytest.mark.parametrize(
    ("completion", "answer", "settings", "expected"),
    [
        ("<answer>3.14</answer>", "3.14159", {"abs_tol": 0.01}, 1.0),
        ("<answer>3.14</answer>", "3.14159", {}, 0.0),
        ("<answer>105</answer>", "100", {"rel_tol": 0.05}, 1.0),
        ("<answer>106</answer>", "100", {"rel_tol": 0.05}, 0.0),
        ("<answer>ten</answer>", "10", {}, 0.0),
        ("7", "7", {"extract": False}, 1.0),
    ],
)
def test_numeric_match(completion: str, answer: str, settings: dict, expected: float) -> None:
    assert numeric_match(completion, answer=answer, **settings) == expected


def test_numeric_match_cannot_score_non_numeric_reference() -> None:
    assert numeric_match("<answer>1</answer>", answer="blue") is None


@pytest.mark.parametrize(
    ("completion", "answer", "settings", "expected"),
    [
        ("<answer>Paris</answer>", "Paris", {}, 1.0),
        ("<answer>paris</answer>", "Paris", {}, 0.0),
        ("<answer>paris.</answer>", "Paris", {"normalize": True}, 1.0),
        (" Paris ", "Paris", {"extract": False}, 1.0),
        ("<answer></answer>", "Paris", {}, 0.0),
    ],
)
def test_exact_match(completion: str, answer: str, settings: dict, expected: float) -> None:
    assert exact_match(completion, answer=answer, **settings) == expected


def _rg_entry(family: str, seed: int = 3) -> dict:
    import reasoning_gym

    return reasoning_gym.create_dataset(family, size=1, seed=seed)[0]


def test_accuracy_uses_reasoning_gym_scorer() -> None:
    entry = _rg_entry("basic_arithmetic")
    right, wrong = f"<answer>{entry['answer']}</answer>", "<answer>not a number</answer>"
    assert accuracy(right, answer=entry["answer"], rg_entry=entry) == 1.0
    assert accuracy(wrong, answer=entry["answer"], rg_entry=entry) == 0.0
    assert accuracy("no tag", answer=entry["answer"], rg_entry=entry) == 0.0


def test_reasoning_gym_verifier_skips_items_without_entry() -> None:
    assert reasoning_gym_verifier("<answer>1</answer>", answer="1") is None
