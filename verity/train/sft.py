"""Supervised fine-tuning on demonstrations: the warm-up before RL, and SFT steps interleaved with RL."""

from __future__ import annotations

import torch
from torch import nn

from verity.model.modeling import token_logprobs
from verity.train.batching import Batch, collate
from verity.types import Completion, Item, Rollout


def demonstration_batch(prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> Batch:
    """A batch whose loss mask covers the demonstrated completion tokens."""
    rollouts = [
        Rollout(
            item=Item(id="demo", task="demo", prompt=""),
            group=i,
            prompt_ids=p,
            completion=Completion(token_ids=c, logprobs=[0.0] * len(c), text="", finish_reason="stop"),
        )
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True))
    ]
    return collate(rollouts, pad_id)


def sft_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Token-mean negative log-likelihood of the masked (completion) tokens."""
    logprobs, _ = token_logprobs(model, batch, temperature=1.0)
    return -(logprobs * batch.loss_mask).sum() / batch.loss_mask.sum().clamp(min=1.0)
