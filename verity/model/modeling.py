"""What the engine and the learner both need from a model: device choice, autocast, teacher-forced log-probs, and
facts about its attention. Kept apart so neither side imports the other."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from verity.model.vision import exclude_placeholders, media_of, media_positions, placeholder_ids, stack_media


class TokenRows(Protocol):
    """Right- or left-padded token rows: ``input_ids`` (B, T) and ``attention_mask`` (B, T)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


def resolve_device(name: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``; other names pass through."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA (matmuls in bf16, log-softmax in fp32 as ``token_logprobs`` upcasts); a no-op on CPU,
    where bf16 matmuls are slower than fp32 on most cores."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


DEFAULT_LOGIT_CHUNK_TOKENS = 1024


def token_logprobs(
    model: nn.Module,
    batch: TokenRows,
    temperature: float,
    with_entropy: bool = False,
    chunk_tokens: int = DEFAULT_LOGIT_CHUNK_TOKENS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob (B, T) of each token given the tokens before it (position 0 gets 0), and optionally the entropy
    (B, T) of the predicting distribution; both use ``logits / temperature`` as the sampler did. The output head
    runs on ``chunk_tokens`` positions at a time (``head_logprobs``), so the (B, T, V) logits never exist. Rows
    with images (``batch.media``, one entry per row) feed their pixel inputs to the model."""
    media = stack_media(getattr(batch, "media", None) or [], batch.input_ids.device)
    positions, _ = media_positions(model, batch.input_ids, batch.attention_mask, media)
    hidden = decoder_states(
        model, media, input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=positions
    )
    picked, entropy = head_logprobs(
        model, hidden[:, :-1], batch.input_ids[:, 1:], temperature, with_entropy, chunk_tokens
    )  # (B, T-1) predicts tokens 1..T-1
    pad = torch.nn.functional.pad
    return pad(picked, (1, 0)), None if entropy is None else pad(entropy, (1, 0))


def causal_lm(model: nn.Module) -> nn.Module:
    """The transformers causal LM itself (a peft wrapper's adapted base model)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_states(model: nn.Module, media: dict[str, object] | None = None, **inputs: object) -> torch.Tensor:
    """Final hidden states (B, T, H) of the causal LM's decoder (after its last norm), without the output head.
    With ``media`` (a batch's image inputs, ``verity.model.vision.stack_media``) the model's base (vision tower and
    decoder) runs, so image features take the place of the image tokens."""
    causal = causal_lm(model)
    if media:
        return causal.base_model(**inputs, **media).last_hidden_state
    return causal.get_decoder()(**inputs).last_hidden_state


def head_logprobs(
    model: nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    with_entropy: bool,
    chunk_tokens: int = DEFAULT_LOGIT_CHUNK_TOKENS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob (B, S) of ``targets`` (B, S) under ``head(hidden) / temperature`` for hidden states (B, S, H), and
    optionally the entropy (B, S), computed ``chunk_tokens`` positions at a time.

    Only one chunk's float32 logits (chunk x V) exist at once. With gradients on and more than one chunk, each
    chunk is recomputed in the backward pass (activation checkpointing) instead of keeping its log-softmax for
    it, so training holds (B, S, H) hidden states rather than (B, S, V) log-probabilities."""
    causal = causal_lm(model)
    head = causal.get_output_embeddings()
    config = causal.config.get_text_config(decoder=True)
    excluded = placeholder_ids(causal)  # image placeholders: never written by the policy

    def chunk_logprobs(h: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = head(h)  # (C, V), at least float32: bf16/fp16 logits are upcast
        logits = scale_logits(logits.to(torch.promote_types(logits.dtype, torch.float32)), config)
        logits = exclude_placeholders(logits, excluded)
        logp_all = torch.log_softmax(logits / temperature, dim=-1)
        picked = logp_all.gather(-1, ids[:, None]).squeeze(-1)  # (C,)
        entropy = -(logp_all.exp() * logp_all).sum(-1) if with_entropy else None
        return picked, entropy

    rows, width = targets.shape
    flat_hidden, flat_ids = hidden.reshape(rows * width, -1), targets.reshape(-1)  # (N, H), (N,)
    recompute = torch.is_grad_enabled() and flat_ids.numel() > chunk_tokens
    pieces = []
    for start in range(0, flat_ids.numel(), chunk_tokens):
        args = (flat_hidden[start : start + chunk_tokens], flat_ids[start : start + chunk_tokens])
        pieces.append(
            checkpoint(chunk_logprobs, *args, use_reentrant=False) if recompute else chunk_logprobs(*args)
        )
    if not pieces:  # no positions (one-token rows)
        empty = hidden.new_zeros((rows, width), dtype=torch.float32)
        return empty, empty.clone() if with_entropy else None
    picked = torch.cat([p for p, _ in pieces]).view(rows, width)
    entropy = torch.cat([e for _, e in pieces]).view(rows, width) if with_entropy else None
    return picked, entropy


def scale_logits(logits: torch.Tensor, config: object) -> torch.Tensor:
    """What models do to their output head's logits before the softmax, read from the text config: Cohere's
    ``logit_scale`` (multiplied), Granite's ``logits_scaling`` (divided by), Gemma's ``final_logit_softcapping``
    (``c * tanh(logits / c)``). ``check_output_head`` catches a model that does something else."""
    if scale := getattr(config, "logit_scale", None):
        logits = logits * scale
    if scaling := getattr(config, "logits_scaling", None):
        logits = logits / scaling
    if softcap := getattr(config, "final_logit_softcapping", None):
        logits = torch.tanh(logits / softcap) * softcap
    return logits


@torch.inference_mode()
def check_output_head(model: nn.Module, tolerance: float = 1e-3) -> None:
    """Refuse a model whose own forward gives other log-probs than the decoder plus chunked head that the
    learner and the engine use (``token_logprobs``), e.g. one that rescales its logits in a way ``scale_logits``
    does not know: the policy gradient would follow a different distribution than the one that sampled.

    Checked on one short row of token ids (never an image placeholder, which the policy excludes); ``tolerance``
    is on log-probs, widened for half-precision weights."""
    config = causal_lm(model).config
    vocab = config.get_text_config(decoder=True).vocab_size
    device = next(model.parameters()).device
    excluded = placeholder_ids(model)
    allowed = [t for t in range(vocab) if t not in excluded] if excluded else range(vocab)
    ids = torch.tensor([[allowed[i * 7919 % len(allowed)] for i in range(1, 9)]], device=device)  # (1, 8)
    rows = _Rows(ids, torch.ones_like(ids))
    was_training = model.training
    model.eval()
    try:
        ours, _ = token_logprobs(model, rows, temperature=1.0)  # (1, 8)
        logits = model(input_ids=ids, attention_mask=rows.attention_mask).logits[:, :-1].float()  # (1, 7, V)
        logits = exclude_placeholders(logits, excluded)
    finally:
        model.train(was_training)
    theirs = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (1, 7)
    if next(model.parameters()).dtype != torch.float32:
        tolerance = max(tolerance, 5e-2)
    gap = (ours[:, 1:] - theirs).abs().max().item()
    if gap > tolerance:
        raise ValueError(
            f"model type {config.model_type!r}: its forward gives log-probs up to {gap:.3g} away from the decoder "
            "plus output head that training uses; it transforms its logits in a way "
            "verity.model.modeling.scale_logits does not reproduce (add it there)"
        )


@dataclass
class _Rows:
    input_ids: torch.Tensor  # (B, T) right-padded
    attention_mask: torch.Tensor  # (B, T)
    media: list[dict[str, Any] | None] | None = None  # each row's image inputs


@torch.inference_mode()
def completion_logprobs(
    model: nn.Module, prompts: list[list[int]], completions: list[list[int]], temperature: float, pad_id: int
) -> list[list[float]]:
    """Teacher-forced log-probs of each completion's tokens after its prompt under ``logits / temperature``, in
    one right-padded forward of ``model`` (left in eval mode while it runs)."""
    was_training = model.training
    model.eval()
    try:
        ids, mask = padded_rows(prompts, completions, pad_id)
        device = next(model.parameters()).device
        with autocast(device):
            rows = _Rows(ids.to(device), mask.to(device), [media_of(p) for p in prompts])
            lp, _ = token_logprobs(model, rows, temperature)
        return completion_values(lp, prompts, completions)
    finally:
        model.train(was_training)


def padded_rows(
    prompts: list[list[int]], completions: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt + completion rows, right-padded: ``input_ids`` (B, T) and ``attention_mask`` (B, T)."""
    rows = [p + c for p, c in zip(prompts, completions, strict=True)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def completion_values(
    values: torch.Tensor, prompts: list[list[int]], completions: list[list[int]]
) -> list[list[float]]:
    """Each completion's positions of per-token ``values`` (B, T) over ``padded_rows``, as lists."""
    values = values.float().cpu()
    pairs = zip(prompts, completions, strict=True)
    return [values[i, len(p) : len(p) + len(c)].tolist() for i, (p, c) in enumerate(pairs)]


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
