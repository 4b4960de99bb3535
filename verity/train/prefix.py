"""Training forward with each group's shared prompt computed once.

The G completions of a GRPO group share one prompt, and in RL with short answers the prompt is most of every
sequence: a plain forward over ``(B, prompt + completion)`` spends most of its FLOPs recomputing the same prompt
G times, forward and backward. Here every distinct prompt runs once (left-padded, so all end at the same
column); its KV cache is then gathered to the rows that continue it, and only the continuations run over it.
Gradients flow back through the gathered cache into the single prompt computation, so the log-probs and
gradients equal the plain forward's (up to float rounding); prompt positions themselves get log-prob 0.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers.cache_utils import DynamicCache

from verity.train.batching import Batch


def cache_keyword(model: nn.Module) -> str:
    """The name this model's forward takes its KV cache by: ``cache`` in recent transformers, else the older
    ``past_key_values`` (a peft wrapper forwards keywords, so the wrapped model is asked)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def full_attention_only(model: nn.Module) -> bool:
    """True when every layer attends to the whole context (no sliding windows or linear attention), so a KV
    cache holds exactly what a full forward would see."""
    config = model.config.get_text_config(decoder=True)
    types = getattr(config, "layer_types", None) or ["full_attention"]
    return set(types) == {"full_attention"} and not getattr(config, "sliding_window", None)


def prompt_groups(batch: Batch) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, ...]]] | None:
    """Each row's untrained prefix length (B,) (the tokens before its first loss position), the index (B,) of its
    distinct prefix, and the distinct prefixes; None when no two rows share one (nothing to gain)."""
    starts = batch.loss_mask.gt(0).int().argmax(-1)  # (B,) first trained position
    prefixes: dict[tuple[int, ...], int] = {}
    owner = []
    for row, start in enumerate(starts.tolist()):
        key = tuple(batch.input_ids[row, :start].tolist())
        owner.append(prefixes.setdefault(key, len(prefixes)))
    if len(prefixes) == len(owner) or min(starts.tolist()) < 1:
        return None
    return starts, torch.tensor(owner), list(prefixes)


def shared_prefix_logprobs(
    model: nn.Module,
    batch: Batch,
    groups: tuple[torch.Tensor, torch.Tensor, list[tuple[int, ...]]],
    temperature: float,
    with_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (B, T) and optional entropies (B, T) at every position after each row's prefix, as
    ``token_logprobs`` computes them; 0 on prefix positions and padding."""
    starts, owner, prefixes = groups
    device = batch.input_ids.device
    starts, owner = starts.to(device), owner.to(device)
    width = max(len(p) for p in prefixes)
    pad = 0  # any id: padded positions are masked out
    prefix_ids = torch.full((len(prefixes), width), pad, dtype=torch.long, device=device)
    prefix_mask = torch.zeros((len(prefixes), width), dtype=torch.long, device=device)
    for u, p in enumerate(prefixes):
        prefix_ids[u, width - len(p) :] = torch.tensor(p, device=device)
        prefix_mask[u, width - len(p) :] = 1
    cache = DynamicCache()
    prefix_positions = (prefix_mask.cumsum(-1) - 1).clamp(min=0)
    first = model(
        input_ids=prefix_ids,
        attention_mask=prefix_mask,
        position_ids=prefix_positions,
        use_cache=True,
        logits_to_keep=1,
        **{cache_keyword(model): cache},
    ).logits[:, -1]  # (U, V) predicts each row's first continuation token
    cache.batch_select_indices(owner)

    lengths = batch.attention_mask.sum(-1)  # (B,)
    span = int((lengths - starts).max())
    offsets = torch.arange(span, device=device)  # (S,)
    columns = (starts[:, None] + offsets).clamp(max=batch.input_ids.shape[1] - 1)  # (B, S)
    valid = offsets < (lengths - starts)[:, None]  # (B, S)
    suffix_ids = batch.input_ids.gather(1, columns).masked_fill(~valid, pad)
    mask = torch.cat([prefix_mask[owner], valid.long()], dim=-1)
    kwargs = {cache_keyword(model): cache}
    rest = model(input_ids=suffix_ids, attention_mask=mask, position_ids=columns, use_cache=True, **kwargs).logits
    logits = torch.cat([first[owner][:, None], rest[:, :-1]], dim=1).float() / temperature  # (B, S, V)
    logp_all = torch.log_softmax(logits, dim=-1)
    picked = logp_all.gather(-1, suffix_ids[..., None]).squeeze(-1)  # (B, S)
    zeros = torch.zeros(batch.input_ids.shape, dtype=picked.dtype, device=device)
    logprobs = zeros.scatter_add(1, columns, picked * valid)
    entropy = None
    if with_entropy:
        ent = -(logp_all.exp() * logp_all).sum(-1)  # (B, S)
        entropy = zeros.scatter_add(1, columns, ent * valid)
    return logprobs, entropy
