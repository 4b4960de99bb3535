"""Answer extraction shared by every verifier that reads a final answer.

The model answers inside ``<answer>...</answer>``, once. Guards against reward hacking (DeepSeek-R1's rule-based
rewards; "several final answers" exploits described for GRPO-style training) and against drift that a lenient
reader would reward: only a completion with exactly one opening and one closing tag, in that order, around a
non-empty answer has an answer. Repeated, nested, unclosed or stray tags (``<answer>1<answer>1</answer>``, two
answers, a revision cut off) give none, so a policy cannot learn to stutter tags and still be paid.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_OPEN, _CLOSE = "<answer>", "</answer>"
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")


def extract_answer(completion: str) -> str | None:
    """The text inside the completion's one ``<answer>...</answer>`` tag, stripped; ``None`` when there is no
    usable answer: no tag, an empty one, or any malformed use of tags (more than one opening or closing tag, or a
    closing tag before the opening one)."""
    if completion.count(_OPEN) != 1 or completion.count(_CLOSE) != 1:
        return None
    start, end = completion.index(_OPEN) + len(_OPEN), completion.index(_CLOSE)
    if end < start:
        return None
    return completion[start:end].strip() or None


def extract_code(completion: str) -> str | None:
    """The program in a completion: the last fenced code block (inside the answer tag if there is one), else the
    answer text itself; ``None`` when neither exists."""
    answer = extract_answer(completion)
    searched = answer if answer is not None else completion
    blocks = [m.group(2) for m in _FENCE.finditer(searched)]
    if blocks:
        return blocks[-1]
    return answer


def normalize_text(text: str) -> str:
    """Case-folded, whitespace-collapsed, without surrounding ``$``/quotes or a trailing period."""
    text = " ".join(text.split()).casefold()
    text = text.strip("$ ").rstrip(".").strip("\"'` ")
    return text


def parse_number(text: str) -> float | None:
    """A number written as an integer, decimal, scientific, ``a/b`` fraction, with thousands separators or a
    leading ``$``; ``None`` when ``text`` is not exactly one number, or is one beyond the float range (``1e400``,
    ``10**400 / 3``), which no tolerance can compare."""
    cleaned = _THOUSANDS.sub("", text.strip().strip("$").strip())
    if "/" in cleaned:
        num, _, den = cleaned.partition("/")
        if not (_NUMBER.fullmatch(num.strip()) and _NUMBER.fullmatch(den.strip())):
            return None
        try:
            value = float(Fraction(num.strip()) / Fraction(den.strip()))
        except (ZeroDivisionError, OverflowError):
            return None
    elif _NUMBER.fullmatch(cleaned):
        value = float(cleaned)
    else:
        return None
    return value if math.isfinite(value) else None
