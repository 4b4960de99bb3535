"""What the engine and the learner both need from a model: device choice, autocast, teacher-forced log-probs, and
facts about its attention. Kept apart so neither side imports the other."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn


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


def token_logprobs(
    model: nn.Module, batch: TokenRows, temperature: float, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob (B, T) of each token given the tokens before it (position 0 gets 0), and optionally the entropy
    (B, T) of the predicting distribution; both use ``logits / temperature`` as the sampler did."""
    positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=positions).logits
    logits = logits[:, :-1].float() / temperature  # (B, T-1, V) predicts tokens 1..T-1
    logp_all = torch.log_softmax(logits, dim=-1)
    picked = logp_all.gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
    logprobs = torch.nn.functional.pad(picked, (1, 0))
    entropy = None
    if with_entropy:
        ent = -(logp_all.exp() * logp_all).sum(-1)
        entropy = torch.nn.functional.pad(ent, (1, 0))
    return logprobs, entropy


@dataclass
class _Rows:
    input_ids: torch.Tensor  # (B, T) right-padded
    attention_mask: torch.Tensor  # (B, T)


@torch.inference_mode()
def completion_logprobs(
    model: nn.Module, prompts: list[list[int]], completions: list[list[int]], temperature: float, pad_id: int
) -> list[list[float]]:
    """Teacher-forced log-probs of each completion's tokens after its prompt under ``logits / temperature``, in
    one right-padded forward of ``model`` (left in eval mode while it runs)."""
    was_training = model.training
    model.eval()
    try:
        rows = [p + c for p, c in zip(prompts, completions, strict=True)]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        device = next(model.parameters()).device
        with autocast(device):
            lp, _ = token_logprobs(model, _Rows(ids.to(device), mask.to(device)), temperature)
        lp = lp.float().cpu()
        pairs = zip(prompts, completions, strict=True)
        return [lp[i, len(p) : len(p) + len(c)].tolist() for i, (p, c) in enumerate(pairs)]
    finally:
        model.train(was_training)


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
