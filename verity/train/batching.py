"""Packing rollouts into right-padded training tensors, and splitting them into mini- and micro-batches."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from verity.model.vision import media_of
from verity.types import Rollout


@dataclass
class Batch:
    """Training tensors, right-padded. Position t of every (B, T) tensor refers to token ``input_ids[:, t]``.

    input_ids        (B, T)  prompt + completion tokens, padded with the pad id
    attention_mask   (B, T)  1 on real tokens
    loss_mask        (B, T)  1 on completion tokens that are trained on
    old_logprobs     (B, T)  behaviour log-prob of each completion token, 0 elsewhere
    advantages       (B, T)  advantage of each completion token, 0 elsewhere
    ref_logprobs     (B, T)  reference-policy log-probs, or None when no KL term is used
    prox_logprobs    (B, T)  the learner's own log-probs before the update, when the loss needs them
    media            B       each row's image inputs (``PromptIds.media``; None: a text row), or None when no
                             row has images
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor
    old_logprobs: torch.Tensor
    advantages: torch.Tensor
    ref_logprobs: torch.Tensor | None = None
    prox_logprobs: torch.Tensor | None = None
    media: list[dict[str, Any] | None] | None = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def select(self, index: torch.Tensor) -> Batch:
        """Rows ``index``, with columns trimmed to the longest selected row (no compute on trailing padding)."""
        width = int(self.attention_mask[index].sum(-1).max().item())
        return Batch(**{f.name: _rows(getattr(self, f.name), index, width) for f in fields(self)})

    def to(self, device: torch.device) -> Batch:
        """The tensors on ``device``; image inputs move when a forward stacks them (``stack_media``)."""
        return replace(self, **{f.name: _move(getattr(self, f.name), device) for f in fields(self)})


def _rows(t: Any, index: torch.Tensor, width: int) -> Any:
    if isinstance(t, list):
        return [t[i] for i in index.tolist()]
    return None if t is None else t[index, :width]


def _move(t: Any, device: torch.device) -> Any:
    return t.to(device) if isinstance(t, torch.Tensor) else t


def collate(rollouts: list[Rollout], pad_id: int) -> Batch:
    """Pack rollouts (prompt + completion) into right-padded tensors; advantages start at zero."""
    lengths = [len(r.prompt_ids) + len(r.completion.token_ids) for r in rollouts]
    shape = (len(rollouts), max(lengths))
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    attention_mask = torch.zeros(shape, dtype=torch.long)
    loss_mask = torch.zeros(shape, dtype=torch.float32)
    old_logprobs = torch.zeros(shape, dtype=torch.float32)
    for row, r in enumerate(rollouts):
        p, c = len(r.prompt_ids), len(r.completion.token_ids)
        input_ids[row, : p + c] = torch.tensor(r.prompt_ids + r.completion.token_ids)
        attention_mask[row, : p + c] = 1
        completion_mask = r.loss_mask if r.loss_mask is not None else [1] * c
        loss_mask[row, p : p + c] = torch.tensor(completion_mask, dtype=torch.float32)
        old_logprobs[row, p : p + c] = torch.tensor(r.completion.logprobs, dtype=torch.float32)
    media = [media_of(r.prompt_ids) for r in rollouts]
    return Batch(
        input_ids, attention_mask, loss_mask, old_logprobs, torch.zeros(shape), media=media if any(media) else None
    )


def split_indices(n: int, parts: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A seeded shuffle of ``range(n)`` cut into ``parts`` nearly equal pieces (the mini-batches)."""
    perm = torch.randperm(n, generator=generator)
    return [chunk for chunk in perm.tensor_split(parts) if len(chunk)]


def micro_batches(batch: Batch, size: int, max_tokens: int | None = None) -> list[Batch]:
    """Rows sorted by length, cut into consecutive runs of at most ``size`` rows, so each micro-batch carries
    little padding. With ``max_tokens``, a run also stops before its padded size (rows x longest row) would pass
    the budget, so long rows come in small micro-batches and short rows in large ones (a fixed number of tokens
    per forward, as in Ring-lite's C3PO); a single row longer than the budget still forms its own micro-batch."""
    lengths = batch.attention_mask.sum(-1)
    order = lengths.argsort()
    parts: list[Batch] = []
    start = 0
    for end in range(1, len(order) + 1):
        rows = end - start
        padded = rows * int(lengths[order[end - 1]])
        if rows > size or (max_tokens is not None and rows > 1 and padded > max_tokens):
            parts.append(batch.select(order[start : end - 1]))
            start = end - 1
    if start < len(order):
        parts.append(batch.select(order[start:]))
    return parts


def padding_share(parts: list[Batch]) -> float:
    """Fraction of the tokens a forward pass over ``parts`` computes that are padding."""
    computed = sum(p.attention_mask.numel() for p in parts)
    real = sum(int(p.attention_mask.sum()) for p in parts)
    return 1.0 - real / max(computed, 1)


def balanced_partition(lengths: torch.Tensor, parts: int) -> list[torch.Tensor]:
    """Row indices (ascending) of ``parts`` shares of rows with ``lengths`` (B,) tokens, balanced by tokens: rows
    go longest first to the share with the fewest tokens so far (ties: fewer rows, then the lower share), which
    keeps every share within one row's length of the others. Reasoning RL mixes completions of tens and
    thousands of tokens, so equal row counts would leave one rank computing most of a step."""
    tokens = [0] * parts
    shares: list[list[int]] = [[] for _ in range(parts)]
    for row in lengths.argsort(descending=True, stable=True).tolist():
        target = min(range(parts), key=lambda p: (tokens[p], len(shares[p]), p))
        shares[target].append(row)
        tokens[target] += int(lengths[row])
    return [torch.tensor(sorted(share), dtype=torch.long) for share in shares]
