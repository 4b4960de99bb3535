"""Image prompts: one encoder, built from the model's own Hugging Face processor, turns an item's prompt and
images into token ids plus the extra model inputs (``pixel_values`` and what else the processor returns), and
one function batches those inputs for a forward pass. The engine's prefill, the learner's forwards, the
reference model and the shared-prompt path all call these two, so none of them handles images itself.

The extra inputs ride on the prompt (``PromptIds.media``). A batch's inputs are each row's inputs concatenated
along their first dimension in row order, which is how image-text models match image features to the image
placeholder tokens of the flattened batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from verity.data.images import load_image
from verity.schema import ConfigError
from verity.types import PromptIds

# What a processor returns besides the model's extra inputs: the token rows the prompt already is.
TOKEN_KEYS = frozenset({"input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids"})


def media_of(prompt: Sequence[int]) -> dict[str, Any] | None:
    """The extra model inputs of a prompt (None for a text prompt)."""
    return getattr(prompt, "media", None)


def stack_media(rows: Sequence[dict[str, Any] | None], device: torch.device | None = None) -> dict[str, Any]:
    """The extra inputs of a batch whose rows have ``rows`` inputs (None: a text row), each input concatenated
    along its first dimension in row order; empty when no row has any."""
    present = [m for m in rows if m]
    if not present:
        return {}
    keys = set(present[0])
    if any(set(m) != keys for m in present):
        raise ValueError(f"image prompts of one batch have different model inputs: {[sorted(m) for m in present]}")
    stacked = {k: torch.cat([m[k] for m in present]) for k in sorted(keys)}
    return {k: v.to(device) for k, v in stacked.items()} if device is not None else stacked


def encode_images(processor: Any, text: str, images: Sequence[Any]) -> PromptIds:
    """Token ids of the rendered prompt ``text`` (whose image placeholders the processor expands) and the
    model inputs of ``images``."""
    loaded = [load_image(ref) for ref in images]
    out = processor(text=[text], images=[loaded], return_tensors="pt")
    media = {k: v for k, v in out.items() if k not in TOKEN_KEYS and isinstance(v, torch.Tensor)}
    return PromptIds(out["input_ids"][0].tolist(), media)


def is_vision_config(config: Any) -> bool:
    """An image-text-to-text model's config (it has a vision tower's config)."""
    return getattr(config, "vision_config", None) is not None


def check_supported(model: Any) -> None:
    """Refuse, with what to do, a vision-language model whose positions Verity does not compute: multimodal
    RoPE (Qwen2-VL and Qwen2.5-VL) gives image tokens 3-D positions that the engine's decode steps and the
    learner's forwards would have to carry."""
    base = getattr(model, "base_model", None)
    if base is not None and hasattr(base, "get_rope_index"):
        raise ConfigError(
            f"model.name: {type(model).__name__} uses multimodal RoPE (3-D positions for image tokens), which "
            "Verity's engine and learner do not compute yet; use a LLaVA-style or Idefics3/SmolVLM model"
        )


def freeze_vision(model: torch.nn.Module) -> int:
    """Fix every weight outside the language model and its output head (the vision tower and the projector);
    returns how many parameters were frozen."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    language = {id(p) for p in causal.get_decoder().parameters()}
    language |= {id(p) for p in causal.get_output_embeddings().parameters()}
    frozen = 0
    for p in causal.parameters():
        if id(p) not in language:
            p.requires_grad_(False)
            frozen += p.numel()
    return frozen


def load_processor(path: str | Path) -> Any:
    """The model's own processor (``AutoProcessor``), tokenizer padding on the left."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path, padding_side="left")
    except (OSError, ValueError, ImportError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"model.name: no usable image processor in {str(path)!r}: {first}") from None
    if getattr(processor, "image_processor", None) is None:
        raise ConfigError(f"model.name: the processor of {str(path)!r} has no image processor")
    return processor
