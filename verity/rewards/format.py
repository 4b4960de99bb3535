"""Format verifiers: reasoning structure, JSON validity, length and keyword constraints (IFEval-style checks)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from verity.rewards.extract import extract_answer
from verity.rewards.verifier import register_verifier

# Optional (or required) think block, then exactly one non-empty answer block, and only whitespace around them.
_THINK = r"<think>(?:(?!</?think>|</?answer>).)*</think>\s*"
_ANSWER = r"<answer>(?:(?!</?answer>|</?think>).)*?\S(?:(?!</?answer>|</?think>).)*</answer>"
_STRUCTURE = {
    False: re.compile(rf"\s*(?:{_THINK})?{_ANSWER}\s*", re.DOTALL),
    True: re.compile(rf"\s*{_THINK}{_ANSWER}\s*", re.DOTALL),
}
_JSON_FENCE = re.compile(r"```(?:json)?\s*\n(.*?)```", re.DOTALL)


@register_verifier("format")
def format_reward(completion: str, *, require_think: bool = False, **fields: Any) -> float:
    """1.0 when the completion is ``<think>...</think>`` (optional unless ``require_think``) followed by one
    non-empty ``<answer>...</answer>`` and nothing else; 0.0 otherwise.

    Settings: ``require_think`` (bool, False).
    """
    return float(_STRUCTURE[require_think].fullmatch(completion) is not None)


@register_verifier("json_valid")
def json_valid(
    completion: str, *, required_keys: Sequence[str] = (), extract: bool = True, **fields: Any
) -> float:
    """1.0 when the answer (or the last ```json fence, or the whole completion when ``extract`` is False) parses
    as JSON, and is an object holding every key of ``required_keys`` when that is given.

    Settings: ``required_keys`` (list of str, empty), ``extract`` (bool, True).
    """
    text = extract_answer(completion) if extract else completion
    if text is None:
        return 0.0
    fences = _JSON_FENCE.findall(text)
    try:
        value = json.loads(fences[-1] if fences else text)
    except ValueError:
        return 0.0
    if required_keys:
        return float(isinstance(value, dict) and all(key in value for key in required_keys))
    return 1.0


@register_verifier("length")
def length_constraint(
    completion: str,
    *,
    min_words: int = 0,
    max_words: int | None = None,
    min_chars: int = 0,
    max_chars: int | None = None,
    **fields: Any,
) -> float:
    """1.0 when the completion's word count (whitespace-separated) and character count lie in the given
    inclusive bounds.

    Settings: ``min_words`` (0), ``max_words`` (None), ``min_chars`` (0), ``max_chars`` (None).
    """
    words, chars = len(completion.split()), len(completion)
    within_words = min_words <= words and (max_words is None or words <= max_words)
    within_chars = min_chars <= chars and (max_chars is None or chars <= max_chars)
    return float(within_words and within_chars)


@register_verifier("keywords")
def keyword_constraint(
    completion: str,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    case_sensitive: bool = False,
    **fields: Any,
) -> float:
    """1.0 when every word of ``include`` appears in the completion and none of ``exclude`` does (as whole words).

    Settings: ``include`` (list of str), ``exclude`` (list of str), ``case_sensitive`` (bool, False).
    """
    flags = 0 if case_sensitive else re.IGNORECASE

    def present(word: str) -> bool:
        return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", completion, flags) is not None

    return float(all(present(w) for w in include) and not any(present(w) for w in exclude))
