"""Masked reductions: how per-token losses become one scalar.

Every aggregation divides a masked *sum* by normalizers that the caller fixes for a whole mini-batch
(``token_normalizer`` = masked tokens in the mini-batch, ``seq_normalizer`` = sequences in the mini-batch). With
the normalizers fixed this way, the losses of the micro-batches a learner accumulates gradients over add up to
the mini-batch loss exactly, whichever mode is chosen.
"""

from __future__ import annotations

import torch
from torch import Tensor

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant")


def masked_sum(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``values`` where ``mask`` is 1; masked positions contribute exactly 0 (even if they hold NaN)."""
    zeroed = torch.where(mask.bool(), values, torch.zeros_like(values))
    return zeroed.sum() if dim is None else zeroed.sum(dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` over positions where ``mask`` is 1 (0 where nothing is unmasked)."""
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1)


def masked_var(values: Tensor, mask: Tensor) -> Tensor:
    """Unbiased variance over the masked positions (0 when fewer than two are unmasked)."""
    mean = masked_mean(values, mask)
    count = mask.sum()
    squares = masked_sum((values - mean) ** 2, mask)
    return squares / (count - 1).clamp(min=1)


def masked_whiten(values: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """``(x - mean) / (std + eps)`` over the masked positions; masked positions become 0."""
    whitened = (values - masked_mean(values, mask)) / (masked_var(values, mask).sqrt() + eps)
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))


def aggregate(
    token_losses: Tensor,
    mask: Tensor,
    mode: str,
    *,
    token_normalizer: float,
    seq_normalizer: float,
    constant_normalizer: float = 1.0,
) -> Tensor:
    """Reduce ``token_losses`` (B, T) to a scalar.

    - ``token_mean``: sum_{i,t} l_it / token_normalizer (DAPO's token-level loss: long answers weigh more).
    - ``seq_mean_token_mean``: sum_i (sum_t l_it / |o_i|) / seq_normalizer (the GRPO paper's loss).
    - ``seq_mean_token_sum``: sum_{i,t} l_it / seq_normalizer.
    - ``constant``: sum_{i,t} l_it / (seq_normalizer * constant_normalizer) (Dr. GRPO, arXiv:2503.20783:
      a constant such as the generation budget replaces |o_i|, removing the length bias).
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {mode!r}; choose one of {', '.join(AGGREGATIONS)}")
    if token_normalizer <= 0 or seq_normalizer <= 0:
        raise ValueError(
            f"normalizers must be positive, got token_normalizer={token_normalizer}, "
            f"seq_normalizer={seq_normalizer} (count them over the whole mini-batch)"
        )
    if mode == "token_mean":
        return masked_sum(token_losses, mask) / token_normalizer
    if mode == "seq_mean_token_mean":
        per_seq = masked_sum(token_losses, mask, dim=-1) / mask.sum(-1).clamp(min=1)  # (B,)
        return per_seq.sum() / seq_normalizer
    if mode == "seq_mean_token_sum":
        return masked_sum(token_losses, mask) / seq_normalizer
    return masked_sum(token_losses, mask) / (seq_normalizer * constant_normalizer)
