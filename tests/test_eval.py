"""Held-out evaluation: pass@k against hand-computed values, maj@k, and evaluate() on a scripted engine."""

from __future__ import annotations

import pytest
from helpers.fake_engine import FakeEngine

from verity.eval import evaluate, majority_correct, pass_at_k
from verity.rollout.engine import Weights
from verity.types import Completion, Item, SamplingParams, Score


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (10, 3, 1, 0.3),  # pass@1 is the fraction correct
        (8, 2, 3, 1 - 20 / 56),  # 1 - C(6,3)/C(8,3)
        (4, 0, 4, 0.0),
        (4, 4, 1, 1.0),
        (3, 1, 3, 1.0),  # n - c < k: every draw of k contains the correct one
    ],
)
def test_pass_at_k(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match=f"n={n}, c={c}, k={k}"):
        pass_at_k(n, c, k)


def tagged(answer: str) -> str:
    return f"<answer>{answer}</answer>"


@pytest.mark.parametrize(
    ("answers", "correct", "expected"),
    [
        (["5", "5", "6"], [True, True, False], True),
        (["6", "6", "5"], [False, False, True], False),  # the right answer is in the minority
        (["6", "5"], [False, True], False),  # a tie goes to the first answer seen
        (["5", "6"], [True, False], True),
    ],
)
def test_majority_vote(answers: list[str], correct: list[bool], expected: bool) -> None:
    assert majority_correct([tagged(a) for a in answers], correct) is expected


def test_majority_ignores_completions_without_an_answer() -> None:
    assert majority_correct(["no tag", "still none", tagged("5")], [False, False, True]) is True
    assert majority_correct(["no tag", "none"], [False, False]) is False


class ScriptedEngine(FakeEngine):
    """Returns fixed completions: greedy text per prompt, and k sampled texts per prompt."""

    def __init__(self, greedy: dict[int, str], sampled: dict[int, list[str]]) -> None:
        super().__init__()
        self.greedy, self.sampled = greedy, sampled
        self.calls: list[SamplingParams] = []

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        self.calls.append(params)
        texts = [[self.greedy[p[0]]] if params.greedy else self.sampled[p[0]] for p in prompts]
        return [[Completion([1], [0.0], t, "stop") for t in ts] for ts in texts]

    def load_weights(self, weights: Weights, version: int) -> None:
        raise AssertionError("evaluation never changes weights")


def exact_scorer(items: list[Item], texts: list[str]) -> list[Score]:
    return [Score(float(t == tagged(item.answer or ""))) for item, t in zip(items, texts, strict=True)]


def test_evaluate_on_a_scripted_engine() -> None:
    items = [
        Item("a0", "add", "p0", "1"),
        Item("a1", "add", "p1", "2"),
        Item("m0", "mul", "p2", "3"),
        Item("m1", "mul", "p3", "4"),
    ]
    greedy = {0: tagged("1"), 1: tagged("2"), 2: tagged("3"), 3: "wrong"}  # 3 of 4 right
    sampled = {
        0: [tagged("1")] * 4,  # c=4
        1: [tagged("2"), tagged("2"), tagged("9"), "none"],  # c=2, majority right
        2: [tagged("7")] * 4,  # c=0
        3: [tagged("4"), tagged("8"), tagged("8"), "none"],  # c=1, majority wrong
    }
    engine = ScriptedEngine(greedy, sampled)
    encode = {item.id: [i] for i, item in enumerate(items)}
    result = evaluate(
        engine, lambda item: encode[item.id], items, exact_scorer, max_new_tokens=9, k=4, temperature=0.7
    )
    assert result["accuracy"] == 0.75 and result["items"] == 4
    assert result["task/add/accuracy"] == 1.0 and result["task/mul/accuracy"] == 0.5
    assert result["pass@1"] == pytest.approx((1 + 0.5 + 0 + 0.25) / 4)
    assert result["pass@4"] == pytest.approx(3 / 4)
    assert result["maj@4"] == pytest.approx(2 / 4)
    assert engine.calls == [SamplingParams(9, temperature=0.0), SamplingParams(9, temperature=0.7, n=4)]
    assert [s["correct"] for s in result["samples"]] == [True, True, True, False]
    assert result["samples"][3]["completion"] == "wrong"


def test_threshold_and_greedy_only() -> None:
    items = [Item("x", "t", "p", "1"), Item("y", "t", "q", "2")]

    def half_scorer(items: list[Item], texts: list[str]) -> list[Score]:
        return [Score(0.5 if t == "half" else 1.0) for t in texts]

    engine = ScriptedEngine({0: "half", 1: "full"}, {})
    encode = {"x": [0], "y": [1]}
    strict = evaluate(engine, lambda it: encode[it.id], items, half_scorer, max_new_tokens=4)
    lenient = evaluate(engine, lambda it: encode[it.id], items, half_scorer, max_new_tokens=4, threshold=0.5)
    assert (strict["accuracy"], lenient["accuracy"]) == (0.5, 1.0)
    assert "pass@1" not in strict and len(engine.calls) == 2  # k=1: greedy only
