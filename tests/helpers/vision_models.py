"""Tiny vision-language models built offline (Qwen2-VL, Idefics3), pictures, and prompt helpers shared by the
vision tests."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)
from transformers.models.idefics3.processing_idefics3 import Idefics3Processor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from verity.data.prompts import encode_prompt
from verity.model.tokenizer import VL_CHAT_TEMPLATE, build_char_tokenizer
from verity.model.vision import load_processor
from verity.types import Completion, Item, Rollout


def picture(colour: str, size: int = 32) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    image.paste(colour, (2, 2, 20, 12))
    return image


QWEN_TEMPLATE = VL_CHAT_TEMPLATE.replace("<image>", "<|vision_start|><|image_pad|><|vision_end|>")


def tiny_qwen2_vl(path: Path) -> tuple[Qwen2VLForConditionalGeneration, object]:
    """A tiny Qwen2-VL (multimodal RoPE) whose processor files are saved as a hub checkpoint's are, and its
    processor loaded back from them."""
    tokenizer = build_char_tokenizer()
    tokenizer.add_tokens(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"], True)
    tokenizer.chat_template = QWEN_TEMPLATE
    tokenizer.save_pretrained(path)
    side = {"shortest_edge": 32 * 32, "longest_edge": 32 * 32}
    Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=1, size=side).save_pretrained(path)
    (path / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2VLProcessor"}))
    ids = {n: tokenizer.convert_tokens_to_ids(f"<|{n}|>") for n in ("vision_start", "vision_end", "image_pad")}
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    text |= {"num_key_value_heads": 2, "vocab_size": len(tokenizer), "max_position_embeddings": 256}
    text |= {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    text["rope_scaling"] = {"type": "mrope", "mrope_section": [2, 3, 3]}
    vision = {"depth": 1, "embed_dim": 16, "hidden_size": 32, "num_heads": 2, "patch_size": 8}
    vision |= {"spatial_merge_size": 2, "temporal_patch_size": 1, "mlp_ratio": 2}
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["image_pad"],
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen2VLForConditionalGeneration(config), load_processor(path)


def tiny_idefics3(width: int = 32) -> tuple[Idefics3ForConditionalGeneration, object]:
    """A tiny Idefics3 (the SmolVLM architecture): a SigLIP-style tower, pixel shuffle, a Llama decoder; 2 heads
    ``width`` wide in the tower and the decoder."""
    tokenizer = build_char_tokenizer()
    tokenizer.add_tokens(["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"], True)
    tokenizer.chat_template = VL_CHAT_TEMPLATE
    side = {"longest_edge": 32}
    images = Idefics3ImageProcessorPil(do_image_splitting=False, size=side, max_image_size=side)
    processor = Idefics3Processor(images, tokenizer, image_seq_len=4, chat_template=VL_CHAT_TEMPLATE)
    text = {"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": width, "intermediate_size": 64}
    text |= {"num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2}
    text |= {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    vision = {"hidden_size": width, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = Idefics3Config(
        vision_config={**vision, "image_size": 32, "patch_size": 8},
        text_config=text,
        scale_factor=2,  # 16 patches shuffled into 4 image tokens
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    return Idefics3ForConditionalGeneration(config), processor


def encode(processor, text: str, *images: Image.Image) -> list[int]:
    item = Item(id="x", task="t", prompt=text, images=images)
    return encode_prompt(processor.tokenizer, item, None, processor=processor)


def rollout_of(prompt: list[int], completion: list[int], group: int = 0) -> Rollout:

    done = Completion(completion, [0.0] * len(completion), "", "stop")
    return Rollout(item=Item(id="x", task="t", prompt=""), group=group, prompt_ids=prompt, completion=done)
