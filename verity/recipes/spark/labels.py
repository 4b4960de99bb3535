"""Step labels for SPARK's first stage: several verifications of each solution, their step-level majority vote,
and step-level F1 against known-correct steps.

SPARK (Rahman et al., arXiv:2512.03244) asks a verifier LLM to judge every step of a solution several times
(self-consistency) and aggregates the verdicts step by step; the aggregate trains the PRM. Without a verifier LLM
here, ``noisy_verdicts`` stands in for one verification: the exact verdicts with each step flipped independently
with probability ``noise``. Real verifier errors are correlated (the same misleading step fools most samples), so
majority voting gains less on them than on this independent noise: our departure, named wherever results are.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def noisy_verdicts(exact: Sequence[bool], noise: float, rng: random.Random) -> list[bool]:
    """One simulated verification: each exact step verdict, flipped with probability ``noise``."""
    return [ok != (rng.random() < noise) for ok in exact]


def majority_steps(verifications: Sequence[Sequence[bool]]) -> list[bool]:
    """Step-level self-consistency: step k is right when more than half of the verifications say so (a tie
    counts as wrong: a step must convince a majority). All verifications judge the same steps."""
    if not verifications:
        return []
    steps = len(verifications[0])
    if any(len(v) != steps for v in verifications):
        raise ValueError("every verification must judge the same number of steps")
    return [2 * sum(v[k] for v in verifications) > len(verifications) for k in range(steps)]


def step_f1(predicted: Sequence[Sequence[bool] | None], exact: Sequence[Sequence[bool]]) -> dict[str, float]:
    """Step-level scores of ``predicted`` verdicts (True: the step is right) against ``exact``, with a wrong step
    as the positive class (finding errors is the PRM's job): ``f1``, ``precision``, ``recall``, ``accuracy``
    over all steps, and ``parsed``, the share of solutions with a prediction. A missing prediction (None: the
    PRM's output did not parse) is wrong on every step."""
    tp = fp = fn = correct = total = 0
    for pred, truth in zip(predicted, exact, strict=True):
        guesses = [not ok for ok in truth] if pred is None else list(pred)
        if len(guesses) != len(truth):
            raise ValueError(f"a prediction has {len(guesses)} steps, its solution {len(truth)}")
        for guess, ok in zip(guesses, truth, strict=True):
            tp += not guess and not ok
            fp += not guess and ok
            fn += guess and not ok
            correct += guess == ok
            total += 1
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    parsed = sum(p is not None for p in predicted) / len(predicted) if predicted else 0.0
    return {
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "accuracy": correct / total if total else 0.0,
        "parsed": parsed,
    }
