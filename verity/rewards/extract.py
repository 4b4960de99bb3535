"""Answer extraction shared by every verifier that reads a final answer.

The model answers inside ``<answer>...</answer>``. Guards against reward hacking (DeepSeek-R1's rule-based rewards;
"several final answers" exploits described for GRPO-style training): only a complete tag counts, an empty answer
counts as none, answers that disagree with each other get no credit, and an answer tag opened after the last
complete one (the model changed its mind and was cut off) voids the answer.
"""

from __future__ import annotations

import re
from fractions import Fraction

_OPEN, _CLOSE = "<answer>", "</answer>"
# Content between an opening and a closing tag that contains no other opening tag: the innermost complete answer.
_ANSWER = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.DOTALL)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")


def extract_answer(completion: str) -> str | None:
    """The text of the last complete ``<answer>`` tag, stripped; ``None`` when there is no usable answer.

    No answer when: no complete tag, the last one is empty, tags disagree (after ``normalize_text``), or a tag is
    opened after the last closing tag (a truncated revision).
    """
    answers = [m.group(1).strip() for m in _ANSWER.finditer(completion)]
    if not answers or not answers[-1]:
        return None
    if completion.rfind(_OPEN) > completion.rfind(_CLOSE):
        return None
    if len({normalize_text(a) for a in answers}) > 1:
        return None
    return answers[-1]


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
    leading ``$``; ``None`` when ``text`` is not exactly one number."""
    cleaned = _THOUSANDS.sub("", text.strip().strip("$").strip())
    if "/" in cleaned:
        num, _, den = cleaned.partition("/")
        if _NUMBER.fullmatch(num.strip()) and _NUMBER.fullmatch(den.strip()):
            try:
                return float(Fraction(num.strip()) / Fraction(den.strip()))
            except ZeroDivisionError:
                return None
        return None
    if _NUMBER.fullmatch(cleaned):
        return float(cleaned)
    return None
