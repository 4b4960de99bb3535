"""LoRA through peft: wrap the policy, and move, checkpoint and save only what training changes.

With adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") each adapted linear layer
computes ``W x + (alpha / r) * B A x`` with ``W`` frozen and only ``A`` (r x in) and ``B`` (out x r) trained;
``B`` starts at zero, so the wrapped model starts as the base model. Weight syncs and checkpoints then carry the
adapters alone: ``trainable_state_dict`` is what the learner hands out. On a vision-language model the adapters go
on the language model only, unless ``lora.vision`` gives the vision tower and projector adapters too or trains
them in full.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from verity.model.config import LoraConfig
from verity.model.vision import vision_modules
from verity.schema import ConfigError


def apply_lora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """``model`` (a peft ``PeftModel``) with adapters on ``cfg.target_modules``; every base weight is frozen."""
    # peft takes seconds to import: only runs that ask for adapters pay for it.
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    outside = vision_modules(model)  # the vision tower and projector of a vision-language model
    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
        exclude_modules=_under(outside) if outside and cfg.vision != "lora" else None,
        modules_to_save=outside if outside and cfg.vision == "full" else None,
    )
    try:
        return get_peft_model(model, peft_cfg)
    except ValueError as err:
        raise ConfigError(f"model.lora.target_modules: {err}") from None


def _under(names: list[str]) -> str:
    """A regular expression matching the modules ``names`` and everything inside them."""
    return "|".join(f"{re.escape(n)}(\\..*)?" for n in names)


def has_frozen(model: nn.Module) -> bool:
    return any(not p.requires_grad for p in model.parameters())


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict of a fully trained model; only the trainable tensors when some are frozen (LoRA).
    Keys are the model's own state-dict keys, so ``load_state_dict(strict=False)`` on an identically wrapped
    model adopts them."""
    state = model.state_dict()
    if not has_frozen(model):
        return {k: v.detach() for k, v in state.items()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach() for k, v in state.items() if k in trainable}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load what ``trainable_state_dict`` produced: every trainable tensor must be present, and nothing else
    may be unexpected (a checkpoint from a differently configured model is an error, not a silent no-op)."""
    hint = "(was model.lora or the model changed since it was saved?)"
    try:
        result = model.load_state_dict(state, strict=not has_frozen(model))
    except RuntimeError as err:
        raise ValueError(f"checkpoint does not fit this model {hint}: {str(err)[:500]}") from None
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    missing = sorted(trainable & set(result.missing_keys))
    if missing or result.unexpected_keys:
        unexpected = sorted(result.unexpected_keys)[:3]
        found = f"missing {missing[:3]}, unexpected {unexpected}"
        raise ValueError(f"checkpoint does not fit this model {hint}: {found}")


def save_policy(model: nn.Module, tokenizer: Any, path: Path, mode: str = "merged") -> None:
    """Save the final policy in Hugging Face format. A LoRA model is saved with its adapters merged into plain
    weights (``mode="merged"``, loadable without peft) or as the adapter alone (``mode="adapter"``); the live
    model is left untouched either way."""
    if mode not in ("merged", "adapter"):
        raise ValueError(f"save mode must be 'merged' or 'adapter', got {mode!r}")
    if mode == "merged" and hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
