"""Turning an item into prompt tokens with the model's chat template."""

from __future__ import annotations

from typing import Any

from verity.types import Item


def render_prompt(tokenizer: Any, item: Item, system_prompt: str | None) -> str:
    """The prompt text the model sees: its chat template with an optional system message, or the bare prompt
    when the tokenizer has no template."""
    if not getattr(tokenizer, "chat_template", None):
        return item.prompt if system_prompt is None else f"{system_prompt}\n\n{item.prompt}"
    messages = [{"role": "user", "content": item.prompt}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer: Any, item: Item, system_prompt: str | None) -> list[int]:
    return tokenizer.encode(render_prompt(tokenizer, item, system_prompt), add_special_tokens=False)
