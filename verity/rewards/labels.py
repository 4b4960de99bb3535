"""Choice and label verifiers: multiple choice, classification labels (CLS-RL) and a ranking NDCG reward.

Ranking follows ReasonRank's reward: NDCG@k of the returned order,
``NDCG@k = DCG@k / IDCG@k`` with ``DCG@k = sum_{i<k} (2^rel_i - 1) / log2(i + 2)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from verity.rewards.extract import extract_answer, normalize_text
from verity.rewards.verifier import register_verifier

# A lone option letter, optionally wrapped as "(B)", "B)", "B.", "B:" or "[B]", at the start of the answer.
_LETTER = re.compile(r"^[\(\[]?([A-Za-z])(?:[\)\]\.:]|\s|$)")
_RANK_ID = re.compile(r"\[?([A-Za-z0-9_-]+)\]?")


def _choice_letter(text: str, choices: Sequence[str] | None) -> str | None:
    if choices:
        by_text = {normalize_text(c): chr(ord("A") + i) for i, c in enumerate(choices)}
        if normalize_text(text) in by_text:
            return by_text[normalize_text(text)]
    match = _LETTER.match(text.strip())
    return match.group(1).upper() if match else None


@register_verifier("multiple_choice")
def multiple_choice(
    completion: str, *, answer: str | None = None, choices: Sequence[str] | None = None, **fields: Any
) -> float | None:
    """1.0 when the answer picks the reference option: a letter (``B``, ``(B)``, ``B. text``) or, when the item
    has ``choices``, an option's text. The reference may be a letter or an option's text.

    Settings: ``choices`` (list of str, optional; usually an item field) — the options in letter order.
    """
    if answer is None:
        return None
    want = _choice_letter(str(answer), choices)
    if want is None:
        raise ValueError(f"multiple-choice reference {answer!r} is neither a letter nor one of the choices")
    text = extract_answer(completion)
    return float(text is not None and _choice_letter(text, choices) == want)


@register_verifier("classification")
def classification(
    completion: str, *, answer: str | None = None, labels: Sequence[str] | None = None, **fields: Any
) -> float | None:
    """1.0 when the answer is the reference label (``normalize_text`` equality). With ``labels`` given, an
    answer outside the label set scores 0.0 even if it contains the right label.

    Settings: ``labels`` (list of str, optional) — the valid label set.
    """
    if answer is None:
        return None
    text = extract_answer(completion)
    if text is None:
        return 0.0
    got = normalize_text(text)
    if labels is not None and got not in {normalize_text(label) for label in labels}:
        return 0.0
    return float(got == normalize_text(str(answer)))


def parse_ranking(text: str) -> list[str]:
    """Identifiers of a ranking written as ``[3] > [1] > [2]``, ``3, 1, 2`` or ``3 1 2``; repeats keep their first
    position, so listing the best document twice gains nothing."""
    seen: dict[str, None] = {}
    for match in _RANK_ID.finditer(text):
        seen.setdefault(match.group(1), None)
    return list(seen)


def ndcg(ranking: Sequence[str], relevance: Mapping[str, float], k: int | None = None) -> float:
    """NDCG@k of ``ranking`` given graded ``relevance`` (unknown ids have relevance 0); 0.0 when nothing is
    relevant."""
    depth = k or max(len(ranking), len(relevance))
    gains = [2.0 ** float(relevance.get(doc, 0.0)) - 1.0 for doc in ranking[:depth]]
    ideal = sorted((2.0 ** float(r) - 1.0 for r in relevance.values()), reverse=True)[:depth]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    if idcg <= 0.0:
        return 0.0
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains)) / idcg


@register_verifier("ndcg")
def ndcg_reward(
    completion: str,
    *,
    answer: str | None = None,
    relevance: Mapping[str, float] | None = None,
    k: int | None = 10,
    **fields: Any,
) -> float | None:
    """NDCG@k of the order in the answer. Relevance comes from the item's ``relevance`` mapping (id -> grade) or,
    without one, from the reference order in ``answer`` (the first of n ids has grade n, the last grade 1).

    Settings: ``k`` (int or None, 10) — cut-off depth; ``relevance`` (mapping, usually an item field).
    """
    if relevance is None:
        if answer is None:
            return None
        ideal = parse_ranking(str(answer))
        relevance = {doc: float(len(ideal) - i) for i, doc in enumerate(ideal)}
    text = extract_answer(completion)
    if text is None:
        return 0.0
    return ndcg(parse_ranking(text), relevance, k)
