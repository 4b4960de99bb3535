"""Answer-matching verifiers: the quickstart's accuracy, exact match and numeric match with tolerance."""

from __future__ import annotations

import math
from typing import Any

from verity.rewards.extract import extract_answer, normalize_text, parse_number
from verity.rewards.puzzles import score_rg_answer
from verity.rewards.verifier import register_verifier


def _answer_text(completion: str, extract: bool) -> str | None:
    return extract_answer(completion) if extract else completion.strip()


@register_verifier("accuracy", preload=("reasoning_gym",))
def accuracy(
    completion: str, *, answer: str | None = None, rg_entry: dict[str, Any] | None = None, **fields: Any
) -> float | None:
    """1.0 when the extracted answer is right. Items with a reasoning-gym entry use its scorer; otherwise the
    answer matches numerically when both sides parse as numbers (within 1e-6) and by ``normalize_text`` if not.
    ``None`` when the item has neither an entry nor a reference answer."""
    text = extract_answer(completion)
    if rg_entry is not None:
        return 0.0 if text is None else score_rg_answer(text, rg_entry)
    if answer is None:
        return None
    if text is None:
        return 0.0
    got, want = parse_number(text), parse_number(str(answer))
    if got is not None and want is not None:
        return float(math.isclose(got, want, rel_tol=0.0, abs_tol=1e-6))
    return float(normalize_text(text) == normalize_text(str(answer)))


@register_verifier("exact_match")
def exact_match(
    completion: str, *, answer: str | None = None, normalize: bool = False, extract: bool = True, **fields: Any
) -> float | None:
    """1.0 when the answer equals the reference exactly (after stripping surrounding whitespace).

    Settings: ``normalize`` (bool, False) — compare with ``normalize_text`` (case, spaces, trailing period);
    ``extract`` (bool, True) — compare the ``<answer>`` content, or the whole completion when False.
    """
    if answer is None:
        return None
    text = _answer_text(completion, extract)
    if text is None:
        return 0.0
    if normalize:
        return float(normalize_text(text) == normalize_text(str(answer)))
    return float(text == str(answer).strip())


@register_verifier("numeric_match")
def numeric_match(
    completion: str,
    *,
    answer: str | float | None = None,
    abs_tol: float = 1e-6,
    rel_tol: float = 0.0,
    extract: bool = True,
    **fields: Any,
) -> float | None:
    """1.0 when the answer is a number with ``|got - want| <= max(abs_tol, rel_tol * max(|got|, |want|))``.

    Settings: ``abs_tol`` (float, 1e-6), ``rel_tol`` (float, 0.0), ``extract`` (bool, True). ``None`` when the
    reference is not a number; 0.0 when the answer is not.
    """
    want = parse_number(str(answer)) if answer is not None else None
    if want is None:
        return None
    text = _answer_text(completion, extract)
    got = parse_number(text) if text is not None else None
    if got is None:
        return 0.0
    return float(math.isclose(got, want, rel_tol=rel_tol, abs_tol=abs_tol))
