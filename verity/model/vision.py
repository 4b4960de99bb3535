"""Image prompts: one encoder, built from the model's own Hugging Face processor, turns an item's prompt and
images into token ids plus the extra model inputs (``pixel_values`` and what else the processor returns), and
one function batches those inputs for a forward pass. The engine's prefill, the learner's forwards, the
reference model and the shared-prompt path all call these two, so none of them handles images itself.

The extra inputs ride on the prompt (``PromptIds.media``). A batch's inputs are each row's inputs concatenated
along their first dimension in row order, which is how image-text models match image features to the image
placeholder tokens of the flattened batch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from verity.schema import ConfigError
from verity.types import PromptIds, RawPrompt

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
    model inputs of ``images`` (RGB Pillow images, see ``verity.data.images.load_image``)."""
    loaded = list(images)
    out = processor(text=[text], images=[loaded], return_tensors="pt")
    ids = out["input_ids"][0].tolist()
    image_token = getattr(processor, "image_token_id", None)
    if image_token is not None and image_token not in ids:
        raise ConfigError(
            "model.name: the prompt has no image placeholder after the chat template (does the processor have a "
            f"chat template that renders image parts?): {text!r}"
        )
    media = {k: v for k, v in out.items() if k not in TOKEN_KEYS and isinstance(v, torch.Tensor)}
    raw = RawPrompt(processor.tokenizer(text)["input_ids"], loaded, len(ids))
    return PromptIds(ids, media, raw)


def is_vision_config(config: Any) -> bool:
    """An image-text-to-text model's config (it has a vision tower's config)."""
    return getattr(config, "vision_config", None) is not None


EXCLUDED_LOGIT = -1e9  # finite: its probability is exactly 0 and 0 * logit stays 0 in entropies


def placeholder_ids(model: torch.nn.Module) -> list[int]:
    """A vision-language model's image (and video) placeholder tokens; none for a text model.

    The policy never writes them: the engine samples, and the learner scores, every completion token under
    logits where they are excluded (``exclude_placeholders``), so the two agree exactly. A placeholder in a
    completion would claim image features that do not exist and break every later forward over it."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    return config_placeholder_ids(causal.config)


def config_placeholder_ids(config: Any) -> list[int]:
    """``placeholder_ids`` of the model whose config is ``config``."""
    if not is_vision_config(config):
        return []
    ids = (getattr(config, "image_token_id", None), getattr(config, "video_token_id", None))
    return sorted({t for t in ids if isinstance(t, int) and t >= 0})


def exclude_placeholders(logits: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """``logits`` (..., V) with the ``ids`` columns set to a logit whose probability is 0."""
    if not ids:
        return logits
    return logits.index_fill(-1, torch.tensor(ids, device=logits.device), EXCLUDED_LOGIT)


def media_positions(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, media: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Position ids of a forward over rows ``input_ids`` (B, T) (left- or right-padded), and each row's offset.

    Most models number the real tokens 0, 1, ... (B, T); the offset is None. A model with multimodal RoPE
    (Qwen2-VL, Qwen2.5-VL: ``get_rope_index``) gives a row with images (3, B, T) positions, where an image's
    tokens take its grid's height and width positions, so the text after it continues from a shifted number:
    token t of a row (counting real tokens) sits at ``t + offset`` (B,). The engine's decode steps and the
    shared-prompt continuations place their tokens by that offset."""
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    rope_index = getattr(getattr(causal, "base_model", None), "get_rope_index", None)
    if rope_index is None or not media:
        return positions, None
    config = causal.config
    types = (input_ids == config.image_token_id).int()
    if getattr(config, "video_token_id", None) is not None:
        types = types + 2 * (input_ids == config.video_token_id).int()
    grids = {k: v for k, v in media.items() if k.endswith("_grid_thw")}
    positions, offset = rope_index(input_ids, mm_token_type_ids=types, attention_mask=attention_mask, **grids)
    return positions, offset.view(-1)


def vision_modules(model: torch.nn.Module) -> list[str]:
    """Names of a vision-language model's top-level modules outside its language model and output head (the
    vision tower and the projector); empty for a text model."""
    if getattr(model.config, "vision_config", None) is None:
        return []
    language = {id(m) for m in model.get_decoder().modules()} | {id(model.get_output_embeddings())}
    outside: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(f"{o}.") for o in outside):
            continue
        if all(id(m) not in language for m in module.modules()):
            outside.append(name)
    return outside


def freeze_vision(model: torch.nn.Module) -> int:
    """Fix the weights of the vision tower and the projector (``vision_modules``); returns how many parameters
    were frozen."""
    frozen = 0
    for name in vision_modules(model):
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(False)
            frozen += p.numel()
    return frozen


def model_processor(model: torch.nn.Module, path: str | Path) -> Any:
    """The processor of the model at ``path`` when it is a vision-language model, else None."""
    return load_processor(path) if is_vision_config(model.config) else None


def processor_at(path: str | Path) -> Any:
    """The processor of the model saved at ``path`` when it is a vision-language model, else None (for a process
    that has the model's path but not its module, such as a Ray rollout actor)."""
    from transformers import AutoConfig

    return load_processor(path) if is_vision_config(AutoConfig.from_pretrained(path)) else None


def load_processor(path: str | Path) -> Any:
    """The model's own processor (``AutoProcessor``), tokenizer padding on the left; for a processor that also
    loads video processing, which needs torchvision, the same processor without it where that cannot load."""
    from transformers import AutoProcessor

    try:
        try:
            processor = AutoProcessor.from_pretrained(path, padding_side="left")
        except (ImportError, OSError) as err:  # no torchvision, or a saved image-only processor
            if not any(word in str(err).lower() for word in ("torchvision", "video processor")):
                raise
            processor = _image_only_processor(path)
    except (OSError, ValueError, ImportError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"model.name: no usable image processor in {str(path)!r}: {first}") from None
    if getattr(processor, "image_processor", None) is None:
        raise ConfigError(f"model.name: the processor of {str(path)!r} has no image processor")
    return processor


def _image_only_processor(path: str | Path) -> Any:
    """The model's processor without its video processor, for a processor class that loads one (Qwen2-VL) where
    video processing cannot load (it needs torchvision, which CPU-only installs may lack). Images are processed
    exactly as the full processor does; the class keeps its name, so a saved copy loads as the original."""
    import transformers

    config = Path(path) / "processor_config.json"
    name = json.loads(config.read_text()).get("processor_class") if config.is_file() else None
    base = getattr(transformers, name, None) if name else None
    if base is None or "video_processor" not in base.get_attributes():
        raise ImportError(f"the processor of {path} needs torchvision, which is not installed")

    def __init__(
        self: Any, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kwargs: Any
    ) -> None:
        base.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    image_only = type(base.__name__, (base,), {"__init__": __init__})
    return image_only.from_pretrained(path, padding_side="left")
