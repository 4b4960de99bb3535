"""Math answers checked by Hugging Face math-verify: LaTeX, boxed answers, fractions, sets, equivalent expressions.

math-verify bounds its parsing and comparison time with ``signal.alarm``, which Python only allows in the main
thread. Worker processes run verifiers in their main thread, so the limit holds there; called from another thread
(an in-process executor driven by a background thread) the verifier runs without math-verify's own limit.
"""

from __future__ import annotations

import threading
from typing import Any

from verity.rewards.extract import extract_answer
from verity.rewards.verifier import register_verifier


def _as_latex(text: str) -> str:
    """math-verify only reads bare LaTeX (sets, polynomials) inside math delimiters; add them when absent."""
    if "$" in text or "\\boxed" in text or "\\(" in text or "\\[" in text:
        return text
    return f"${text}$"


@register_verifier("math", preload=("math_verify", "sympy"))
def math_reward(
    completion: str, *, answer: str | None = None, extract: bool = True, timeout_s: int = 5, **fields: Any
) -> float | None:
    """1.0 when math-verify finds the answer equivalent to the reference, else 0.0; ``None`` when the reference
    cannot be parsed.

    Settings: ``extract`` (bool, True) — read the ``<answer>`` content, or the whole completion when False
    (math-verify then finds the last boxed/LaTeX answer itself); ``timeout_s`` (int, 5) — math-verify's parsing
    and comparison limits, applied in the main thread only.
    """
    from math_verify import parse, verify

    if answer is None:
        return None
    text = extract_answer(completion) if extract else completion
    if text is None:
        return 0.0
    limit = timeout_s if threading.current_thread() is threading.main_thread() else None
    gold = parse(_as_latex(str(answer)), parsing_timeout=limit)
    if not gold:
        return None
    predicted = parse(_as_latex(text) if extract else text, parsing_timeout=limit)
    if not predicted:
        return 0.0
    return float(verify(gold, predicted, timeout_seconds=limit))
