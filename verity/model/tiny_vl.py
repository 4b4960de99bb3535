"""The architecture of Verity's offline tiny vision-language base (``model.name: tiny-vl``): LLaVA-style, a small
CLIP vision encoder whose patch features a two-layer projector maps into the tiny Llama decoder, with a
``LlavaProcessor`` over Pillow image processing (no torchvision needed) and the tiny tokenizer. Warm-up, caching
and saving are the text base's (``verity.run.base.ensure_tiny_base``)."""

from __future__ import annotations

from typing import Any

from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedModel,
)
from transformers.models.llava.processing_llava import LlavaProcessor

from verity.model.config import ModelConfig
from verity.model.tokenizer import IMAGE, VL_CHAT_TEMPLATE


def build_tiny_vl(model: ModelConfig, tokenizer: Any) -> tuple[PreTrainedModel, Any]:
    """A freshly initialised tiny vision-language model and its processor; ``tokenizer`` gains the image token
    and the image-aware chat template."""
    tiny, vision = model.tiny, model.tiny_vision
    tokenizer.add_tokens([IMAGE], special_tokens=True)
    tokenizer.chat_template = VL_CHAT_TEMPLATE
    side = {"height": vision.image_size, "width": vision.image_size}
    image_processor = CLIPImageProcessorPil(
        size=side, crop_size=side, do_center_crop=False, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=VL_CHAT_TEMPLATE,
        patch_size=vision.patch_size,
        vision_feature_select_strategy="default",  # the class token is dropped: one image token per patch
        image_token=IMAGE,
        num_additional_image_tokens=1,
    )
    text = tiny.decoder_config(tokenizer)
    tower = CLIPVisionConfig(
        hidden_size=vision.hidden_size,
        intermediate_size=4 * vision.hidden_size,
        num_hidden_layers=vision.num_layers,
        num_attention_heads=vision.num_heads,
        image_size=vision.image_size,
        patch_size=vision.patch_size,
    )
    config = LlavaConfig(
        vision_config=tower.to_dict(),
        text_config=text.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlavaForConditionalGeneration(config), processor
