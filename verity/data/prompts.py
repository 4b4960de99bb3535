"""Turning an item into prompt tokens: per-task system prompt and few-shot examples, in the model's chat
template; and the reference solution of an item (for ReLIFT and ViSurf)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from verity.data.config import DataConfig, FewShotExample
from verity.data.images import load_image
from verity.schema import ConfigError
from verity.types import Item


def render_prompt(
    tokenizer: Any, item: Item, system_prompt: str | None, few_shot: Sequence[FewShotExample] = ()
) -> str:
    """The prompt text the model sees: with a chat template, system message, few-shot user/assistant turns and
    the item's prompt (after one image part per image, for the template to mark where the images go); without
    one, the same parts joined by blank lines. ``tokenizer`` may be a processor (its chat template is used)."""
    if not getattr(tokenizer, "chat_template", None):
        parts = [system_prompt] if system_prompt is not None else []
        parts += [f"{ex.prompt}\n{ex.completion}" for ex in few_shot]
        return "\n\n".join([*parts, item.prompt])
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    for ex in few_shot:
        messages += [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.completion}]
    content: Any = item.prompt
    if item.images:
        content = [{"type": "image"} for _ in item.images] + [{"type": "text", "text": item.prompt}]
    messages.append({"role": "user", "content": content})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(
    tokenizer: Any,
    item: Item,
    system_prompt: str | None,
    few_shot: Sequence[FewShotExample] = (),
    processor: Any = None,
) -> list[int]:
    """The prompt's token ids; an item with images goes through the model's ``processor``, and its ids carry
    the image inputs (``verity.types.PromptIds``)."""
    if not item.images:
        return tokenizer.encode(render_prompt(tokenizer, item, system_prompt, few_shot), add_special_tokens=False)
    if processor is None:
        raise ConfigError(
            f"data.tasks[{item.task}]: item {item.id} has images, but the model has no image processor; use a "
            "vision-language model (e.g. model.name: tiny-vl, or a Hugging Face image-text-to-text model)"
        )
    from verity.model.vision import encode_images  # torch: not needed by text-only callers such as reward workers

    images = [load_image(ref) for ref in item.images]
    return encode_images(processor, render_prompt(processor, item, system_prompt, few_shot), images)


class TaskPrompts:
    """Each task's prompt template: its own system prompt (else ``data.system_prompt``) and few-shot examples;
    image items are encoded with ``processor`` (the model's, None for a text-only model)."""

    def __init__(self, data: DataConfig, processor: Any = None) -> None:
        self.default_system = data.system_prompt
        self.tasks = {t.name: t for t in data.tasks}
        self.processor = processor

    def encode(self, tokenizer: Any, item: Item) -> list[int]:
        task = self.tasks.get(item.task)
        if task is None:
            return encode_prompt(tokenizer, item, self.default_system, processor=self.processor)
        system = task.system_prompt if task.system_prompt is not None else self.default_system
        return encode_prompt(tokenizer, item, system, task.few_shot, self.processor)


def reference_solution(item: Item, field: str) -> str | None:
    """The demonstration for ``item``: its ``field`` column, or with ``field == 'answer'`` the answer in answer
    tags (the format the built-in tiny model is warmed up on); None when the item has none."""
    if field == "answer":
        return None if item.answer is None else f"<answer>{item.answer}</answer>"
    value = item.meta.get(field)
    return value if isinstance(value, str) and value else None
