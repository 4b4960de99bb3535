"""Writing a policy in Hugging Face format from a ``(name, tensor)`` stream, one safetensors shard at a time, so
the whole model is never held at once (the fsdp2 learner group's final model)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, GenerationConfig

INDEX = "model.safetensors.index.json"


def save_streamed(
    weights: Iterable[tuple[str, torch.Tensor]], path: Path, model_path: str, tokenizer: Any, shard_mb: float
) -> None:
    """``weights`` into ``model-NNNNN.safetensors`` files of about ``shard_mb`` MB with the index
    ``from_pretrained`` reads, plus the config (and generation config) of ``model_path`` and the tokenizer. With
    tied word embeddings the output head is the input embedding: it is not stored twice (the sharded learner's
    state dict names both, as separate tensors), as ``save_pretrained`` does."""
    config = AutoConfig.from_pretrained(model_path)
    tied = bool(getattr(config.get_text_config(), "tie_word_embeddings", False))
    path.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    shard: dict[str, torch.Tensor] = {}
    size = total = 0
    files = 0

    def flush() -> None:
        nonlocal shard, size, files
        files += 1
        name = f"model-{files:05d}.safetensors"
        save_file(shard, str(path / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        shard, size = {}, 0

    for name, tensor in weights:
        if tied and name.endswith("lm_head.weight"):
            continue
        shard[name] = tensor.contiguous()
        size += tensor.numel() * tensor.element_size()
        total += tensor.numel() * tensor.element_size()
        if size >= shard_mb * 2**20:
            flush()
    if shard:
        flush()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / INDEX).write_text(json.dumps(index, indent=2))
    config.save_pretrained(path)
    with contextlib.suppress(OSError):  # a model without a generation config
        GenerationConfig.from_pretrained(model_path).save_pretrained(path)
    tokenizer.save_pretrained(path)
