"""Reasoning-gym verifiers: every family is scored by reasoning-gym's own scorer.

Items from the reasoning-gym source carry the dataset entry in ``meta["rg_entry"]``; the entry's
``metadata["source_dataset"]`` names the family, so one verifier covers every family, including those whose scorer
checks the model's answer (countdown, n_queens, propositional_logic, ...) instead of comparing it to a fixed one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from verity.rewards.extract import extract_answer
from verity.rewards.verifier import register_verifier


@functools.cache
def _scorer(family: str) -> Callable[[str, dict[str, Any]], float]:
    import reasoning_gym

    return reasoning_gym.get_score_answer_fn(family)


def score_rg_answer(answer_text: str, entry: dict[str, Any], family: str | None = None) -> float:
    """reasoning-gym's score in [0, 1] for ``answer_text`` on ``entry``; ``family`` overrides the entry's
    ``metadata["source_dataset"]`` (needed for entries built by a composite dataset)."""
    name = family or entry.get("metadata", {}).get("source_dataset")
    if not name:
        raise ValueError("reasoning-gym entry has no metadata['source_dataset']; set the verifier's 'family'")
    return float(_scorer(name)(answer_text, entry))


@register_verifier("reasoning_gym", preload=("reasoning_gym",))
def reasoning_gym_verifier(
    completion: str, *, rg_entry: dict[str, Any] | None = None, family: str | None = None, **fields: Any
) -> float | None:
    """Score the extracted answer with the family's reasoning-gym scorer; ``None`` for items without an entry.

    Settings: ``family`` (str, optional) — score with this family's scorer instead of the entry's own.
    """
    if rg_entry is None:
        return None
    text = extract_answer(completion)
    if text is None:
        return 0.0
    return score_rg_answer(text, rg_entry, family)
