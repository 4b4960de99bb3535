"""Running sums: a task whose solutions have steps that can be checked exactly.

Item ``index`` of seed ``seed`` asks for ``t_0 + ... + t_n`` of ``terms`` random ``digits``-digit numbers; its
demonstration writes one running sum per line (``3+5=8``, ``8+8=16``) and then ``<answer>16</answer>``.
``verity.rewards.steps.sum_step_labels`` labels each step of any solution right or wrong, which gives the
known-correct steps a process reward model is measured against. Named in a config as
``data.tasks[].function: verity.recipes.spark.task:make_item``.
"""

from __future__ import annotations

import random
from typing import Any


def make_item(seed: int, index: int, terms: int = 3, digits: int = 1) -> dict[str, Any]:
    """One running-sum problem as a generator row: prompt, answer, its ``terms`` and a step-by-step
    demonstration."""
    rng = random.Random(seed * 1_000_003 + index)
    numbers = [rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1) for _ in range(terms)]
    lines, total = [], numbers[0]
    for term in numbers[1:]:
        lines.append(f"{total}+{term}={total + term}")
        total += term
    return {
        "prompt": "Add step by step: " + " ".join(str(n) for n in numbers),
        "answer": str(total),
        "terms": numbers,
        "demonstration": "\n".join([*lines, f"<answer>{total}</answer>"]),
    }
