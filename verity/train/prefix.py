"""Training forward with each group's shared prompt computed once.

The G completions of a GRPO group share one prompt, and in RL with short answers the prompt is most of every
sequence: a plain forward over ``(B, prompt + completion)`` spends most of its FLOPs recomputing the same prompt
G times, forward and backward. Here every distinct prompt runs once (left-padded, so all end at the same
column); its KV cache is then gathered to the rows that continue it, and only the continuations run over it.
Gradients flow back through the gathered cache into the single prompt computation, so the log-probs and
gradients equal the plain forward's (up to float rounding); prompt positions themselves get log-prob 0.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.cache_utils import DynamicCache

from verity.model.modeling import DEFAULT_LOGIT_CHUNK_TOKENS, cache_keyword, decoder_states, head_logprobs
from verity.model.vision import media_positions, stack_media
from verity.train.batching import Batch


def prompt_groups(batch: Batch) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, ...]]] | None:
    """Each row's untrained prefix length (B,) (the tokens before its first loss position), the index (B,) of its
    distinct prefix, and the distinct prefixes' tokens; None when no two rows share one (nothing to gain). Rows
    with images share a prefix only when they share its image inputs too (the same prompt's samples do)."""
    starts = batch.loss_mask.gt(0).int().argmax(-1)  # (B,) first trained position
    prefixes: dict[tuple[tuple[int, ...], int], int] = {}
    owner = []
    for row, start in enumerate(starts.tolist()):
        images = id(batch.media[row]) if batch.media and batch.media[row] else 0
        key = (tuple(batch.input_ids[row, :start].tolist()), images)
        owner.append(prefixes.setdefault(key, len(prefixes)))
    if len(prefixes) == len(owner) or min(starts.tolist()) < 1:
        return None
    return starts, torch.tensor(owner), [tokens for tokens, _ in prefixes]


CALL_OVERHEAD_TOKENS = 64


def length_buckets(lengths: list[int], overhead: int = CALL_OVERHEAD_TOKENS) -> list[list[int]]:
    """Rows grouped into runs of similar length that minimise computed tokens: each run costs its row count times
    its longest row, plus ``overhead`` tokens for the extra forward and backward call. Exact, by dynamic
    programming over the rows sorted by length (O(B^2)); returns row indices, shortest run first.

    The default (``CALL_OVERHEAD_TOKENS``, 64) is measured (``bench/bench_train.py``, one CPU thread): on an RL
    batch of 4-6 token answers, folding a one-row bucket into the other 63 rows (63 more tokens computed) made the
    step about 10 % faster on both the 0.9M and the 15M model, so a call costs more than that many tokens; a rare
    long answer still gets its own bucket."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = [0.0] + [float("inf")] * len(order)  # best[j]: cheapest cover of the j shortest rows
    cut = [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        for i in range(j):
            cost = best[i] + (j - i) * lengths[order[j - 1]] + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    runs, j = [], len(order)
    while j:
        runs.append(order[cut[j] : j])
        j = cut[j]
    return runs[::-1]


def shared_prefix_logprobs(
    model: nn.Module,
    batch: Batch,
    groups: tuple[torch.Tensor, torch.Tensor, list[tuple[int, ...]]],
    temperature: float,
    with_entropy: bool,
    overhead: int = CALL_OVERHEAD_TOKENS,
    chunk_tokens: int = DEFAULT_LOGIT_CHUNK_TOKENS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (B, T) and optional entropies (B, T) at every position after each row's prefix, as
    ``token_logprobs`` computes them; 0 on prefix positions and padding. Continuations run in length buckets
    (``length_buckets(..., overhead)``) over the one prefix computation, so a few long ones do not pad all the
    short ones."""
    starts, owner, prefixes = groups
    device = batch.input_ids.device
    starts, owner = starts.to(device), owner.to(device)
    width = max(len(p) for p in prefixes)
    prefix_ids = torch.zeros((len(prefixes), width), dtype=torch.long, device=device)  # left-padded
    prefix_mask = torch.zeros((len(prefixes), width), dtype=torch.long, device=device)
    for u, p in enumerate(prefixes):
        prefix_ids[u, width - len(p) :] = torch.tensor(p, device=device)
        prefix_mask[u, width - len(p) :] = 1
    cache = DynamicCache()
    media = None
    if batch.media:  # each distinct prefix's image inputs, from the first row that continues it
        media = stack_media([batch.media[owner.tolist().index(u)] for u in range(len(prefixes))], device)
    prefix_positions, offset = media_positions(model, prefix_ids, prefix_mask, media or {})
    first = decoder_states(
        model,
        media,
        input_ids=prefix_ids,
        attention_mask=prefix_mask,
        position_ids=prefix_positions,
        use_cache=True,
        **{cache_keyword(model): cache},
    )[:, -1]  # (U, H) predicts each row's first continuation token
    prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
    span = batch.attention_mask.sum(-1) - starts  # (B,) continuation lengths
    logprobs = torch.zeros(batch.input_ids.shape, device=device)
    entropy = torch.zeros(batch.input_ids.shape, device=device) if with_entropy else None
    for bucket in length_buckets(span.tolist(), overhead):
        rows = torch.tensor(bucket, device=device)
        # The gathered cache starts each row from its own prompt; gradients flow back into the shared one.
        index = owner[rows]
        kv = DynamicCache(
            ddp_cache_data=[(k.index_select(0, index), v.index_select(0, index)) for k, v in prefix_kv]
        )
        offsets = torch.arange(int(span[rows].max()), device=device)  # (S,)
        columns = (starts[rows, None] + offsets).clamp(max=batch.input_ids.shape[1] - 1)  # (R, S)
        valid = offsets < span[rows, None]  # (R, S)
        ids = batch.input_ids[rows].gather(1, columns).masked_fill(~valid, 0)
        mask = torch.cat([prefix_mask[index], valid.long()], dim=-1)
        kwargs = {cache_keyword(model): kv}
        # Under multimodal RoPE, text after a prompt's images is numbered from its shifted start.
        positions = columns if offset is None else columns + offset[index, None]
        rest = decoder_states(
            model, input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs
        )
        hidden = torch.cat([first[index, None], rest[:, :-1]], dim=1)  # (R, S, H)
        picked, ent = head_logprobs(model, hidden, ids, temperature, with_entropy, chunk_tokens)  # (R, S)
        logprobs = logprobs.index_add(0, rows, _place(picked * valid, columns, logprobs.shape[1]))
        if entropy is not None:
            entropy = entropy.index_add(0, rows, _place(ent * valid, columns, entropy.shape[1]))
    return logprobs, entropy


def _place(values: torch.Tensor, columns: torch.Tensor, width: int) -> torch.Tensor:
    """(R, S) values at (R, S) column indices of an (R, width) zero tensor (padding entries must be 0)."""
    return torch.zeros((values.shape[0], width), dtype=values.dtype, device=values.device).scatter_add(
        1, columns, values
    )
