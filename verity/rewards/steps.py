"""Steps of a completion, and an exact step checker for running sums.

A process verifier scores each step of a completion (``Score.steps``). Where steps begin and end is a rule the
user sets: ``split_steps`` cuts the text at a separator pattern (a regular expression; one line per step by
default) and keeps the non-blank pieces.

``sum_steps`` is the reference process verifier of the running-sum task (``verity.recipes.spark.task``): step k
of a solution to ``t_0 + t_1 + ... + t_n`` must read ``a+b=c`` with ``a`` the previous step's result (``t_0`` for
the first step), ``b = t_{k+1}`` and ``c = a + b``; the final ``<answer>x</answer>`` step must repeat the last
result. Each step is judged locally, so a correct step that follows a wrong one is still correct: the labels
say which steps are right, not only where the first error is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from verity.rewards.verifier import register_verifier
from verity.types import Score

_SUM_STEP = re.compile(r"\s*(-?\d+)\s*\+\s*(-?\d+)\s*=\s*(-?\d+)\s*")
_ANSWER_STEP = re.compile(r"\s*<answer>\s*(-?\d+)\s*</answer>\s*")

Aggregate = Literal["min", "mean", "last"]


def split_steps(text: str, separator: str = "\n") -> list[tuple[int, int]]:
    """``(start, end)`` character spans of the non-blank pieces of ``text`` between matches of the regular
    expression ``separator``."""
    spans, start = [], 0
    for match in re.finditer(separator, text):
        if text[start : match.start()].strip():
            spans.append((start, match.start()))
        start = match.end()
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def aggregate_steps(values: Sequence[float], how: Aggregate) -> float:
    """One number for a solution from its step scores: ``min`` (every step must be right), ``mean`` or ``last``;
    0.0 without steps."""
    if not values:
        return 0.0
    if how == "min":
        return float(min(values))
    if how == "mean":
        return float(sum(values) / len(values))
    if how == "last":
        return float(values[-1])
    raise ValueError(f"aggregate must be 'min', 'mean' or 'last', got {how!r}")


def sum_step_labels(text: str, terms: Sequence[int], separator: str = "\n") -> list[tuple[int, bool]]:
    """``(end, correct)`` for each step of a running-sum solution (see the module docstring)."""
    labels: list[tuple[int, bool]] = []
    previous: int | None = int(terms[0]) if terms else None
    k = 0
    for start, end in split_steps(text, separator):
        piece = text[start:end]
        answer = _ANSWER_STEP.fullmatch(piece)
        if answer is not None:
            labels.append((end, previous is not None and int(answer.group(1)) == previous))
            continue
        step = _SUM_STEP.fullmatch(piece)
        if step is None:
            labels.append((end, False))
            previous = None
            continue
        a, b, c = (int(g) for g in step.groups())
        expected_b = int(terms[k + 1]) if k + 1 < len(terms) else None
        labels.append((end, a == previous and b == expected_b and c == a + b))
        previous, k = c, k + 1
    return labels


@register_verifier("sum_steps")
def sum_steps(completion: str, terms: Sequence[int], separator: str = "\n", aggregate: Aggregate = "min") -> Score:
    """Exact step scores of a running-sum solution (1 right, 0 wrong); the value aggregates them. A solution
    that does not reach the full sum (too few steps) or has no answer step scores at most its steps' aggregate
    with a 0 appended."""
    labels = sum_step_labels(completion, terms, separator)
    steps = tuple((end, float(ok)) for end, ok in labels)
    values = [v for _, v in steps]
    complete = sum(bool(_SUM_STEP.fullmatch(completion[s:e])) for s, e in split_steps(completion, separator))
    has_answer = _ANSWER_STEP.search(completion) is not None
    if complete != len(terms) - 1 or not has_answer:
        values = [*values, 0.0]
    return Score(aggregate_steps(values, aggregate), steps=steps)
