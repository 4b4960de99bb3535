"""Reward shapers applied after the verifiers: each returns an additive term per sample (N,)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def soft_overlong_penalty(lengths: Tensor, max_len: int, buffer: int) -> Tensor:
    """DAPO's soft overlong punishment (arXiv:2503.14476): 0 up to ``max_len - buffer`` tokens, then falling
    linearly to -1 at ``max_len``, and -1 beyond. (N,)."""
    start = max_len - buffer
    ramp = (start - lengths.float()) / buffer
    return torch.where(lengths <= start, torch.zeros_like(ramp), ramp.clamp(min=-1.0))


def long2short_reward(lengths: Tensor, correct: Tensor, group_ids: Tensor) -> Tensor:
    """Kimi k1.5's length reward (arXiv:2501.12599): within each group,
    ``lambda_i = 0.5 - (len_i - min_len) / (max_len - min_len)``; a correct answer gets ``lambda_i``, a wrong
    one ``min(0, lambda_i)``, so short correct answers gain and long wrong ones lose. A group whose lengths are
    all equal gets 0. (N,)."""
    lengths = lengths.float()
    _, index = torch.unique(group_ids, return_inverse=True)
    groups = int(index.max()) + 1
    lo = torch.full((groups,), float("inf")).scatter_reduce(0, index, lengths, "amin")[index]
    hi = torch.full((groups,), float("-inf")).scatter_reduce(0, index, lengths, "amax")[index]
    spread = hi - lo
    lam = torch.where(spread > 0, 0.5 - (lengths - lo) / spread.clamp(min=1e-9), torch.zeros_like(lengths))
    return torch.where(correct.bool(), lam, lam.clamp(max=0.0))


def repetition_fraction(token_ids: Sequence[int], n: int) -> float:
    """Share of a completion's n-grams that repeat an earlier n-gram of the same completion (0 = no repeats,
    near 1 = a loop); 0 for completions shorter than n."""
    total = len(token_ids) - n + 1
    if total <= 0:
        return 0.0
    seen: set[tuple[int, ...]] = set()
    repeats = 0
    for i in range(total):
        gram = tuple(token_ids[i : i + n])
        repeats += gram in seen
        seen.add(gram)
    return repeats / total


def repetition_penalty(completions: Sequence[Sequence[int]], n: int) -> Tensor:
    """n-gram repetition penalty ``-repetition_fraction`` per completion (N,), in the spirit of MiroMind-M1's
    repetition penalty: the more of a completion is spent repeating itself, the larger the penalty. Departure:
    the paper weighs where the repetition starts; this counts how much of the text repeats, which grows the
    same way for degenerate loops and needs no threshold."""
    return -torch.tensor([repetition_fraction(ids, n) for ids in completions], dtype=torch.float32)
