"""SPARK's step labels on hand-counted cases: simulated verifications, the step-level vote, step F1."""

import random

import pytest

from verity.recipes.spark.labels import majority_steps, noisy_verdicts, step_f1
from verity.recipes.spark.task import make_item
from verity.rewards.steps import sum_steps


def test_noise_zero_and_one() -> None:
    rng = random.Random(0)
    exact = [True, False, True]
    assert noisy_verdicts(exact, 0.0, rng) == exact
    assert noisy_verdicts(exact, 1.0, rng) == [False, True, False]


def test_noise_rate_is_the_flip_rate() -> None:
    rng = random.Random(1)
    flips = sum(not v for _ in range(2000) for v in noisy_verdicts([True] * 5, 0.2, rng))
    assert flips / 10_000 == pytest.approx(0.2, abs=0.02)


def test_majority_per_step_and_ties_are_wrong() -> None:
    votes = [[True, True, False], [True, False, False], [False, True, True]]
    assert majority_steps(votes) == [True, True, False]
    assert majority_steps([[True], [False]]) == [False]
    with pytest.raises(ValueError, match="same number of steps"):
        majority_steps([[True], [True, False]])


def test_step_f1_hand_counted() -> None:
    exact = [[True, False, False], [True, True]]
    predicted = [[True, False, True], None]
    # wrong steps are positive: sol 0 finds 1 of 2 errors (tp 1, fn 1); sol 1 is unparsed: both right steps are
    # called wrong (fp 2). precision 1/3, recall 1/2, F1 = 2 * (1/6) / (5/6) = 0.4; accuracy 2 of 5.
    got = step_f1(predicted, exact)
    assert got["precision"] == pytest.approx(1 / 3) and got["recall"] == pytest.approx(0.5)
    assert got["f1"] == pytest.approx(0.4) and got["accuracy"] == pytest.approx(0.4) and got["parsed"] == 0.5


def test_running_sum_demonstrations_are_right_at_every_step() -> None:
    for index in range(20):
        row = make_item(0, index, terms=4, digits=2)
        score = sum_steps(row["demonstration"], row["terms"])
        assert score.value == 1.0 and len(score.steps) == 4
        assert str(sum(row["terms"])) == row["answer"]
