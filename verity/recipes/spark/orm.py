"""An outcome reward model (ORM) from the same votes: a sequence classifier that scores a whole solution, served
by the ``reward_model`` verifier. SPARK trains ORM, PRM and PRM-CoT variants on its verification data; this is
the discriminative ORM, initialised from the generator with a fresh one-label head and trained with binary
cross-entropy on the voted outcome (a solution is right when the vote passes every step)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification

from verity.rewards.model_rewards import DEFAULT_RM_TEMPLATE, fill
from verity.types import Item


def orm_text(item: Item, completion: str) -> str:
    """What the ORM reads: the ``reward_model`` verifier's default template."""
    return fill(DEFAULT_RM_TEMPLATE, completion, {"prompt": item.prompt})


def train_orm(
    base: str, tokenizer: Any, examples: list[tuple[str, bool]], steps: int, lr: float, out: Path
) -> Path:
    """Fine-tune a one-label classifier from ``base`` on ``(text, right)`` pairs; saved to ``out``."""
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = random.Random(0)
    for _ in range(steps):
        batch = rng.sample(examples, min(32, len(examples)))
        enc = tokenizer([t for t, _ in batch], return_tensors="pt", padding=True)
        logits = model(**enc).logits[:, 0]  # (B,)
        targets = torch.tensor([float(ok) for _, ok in batch])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def orm_accuracy(scores: list[float], truth: list[bool]) -> float:
    """Share of solutions the ORM classifies right, a positive logit meaning "right"."""
    return sum((s > 0) == ok for s, ok in zip(scores, truth, strict=True)) / len(truth) if truth else 0.0
