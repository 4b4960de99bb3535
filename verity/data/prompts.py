"""Turning an item into prompt tokens: per-task system prompt and few-shot examples, in the model's chat
template; and the reference solution of an item (for ReLIFT and ViSurf)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from verity.data.config import DataConfig, FewShotExample
from verity.types import Item


def render_prompt(
    tokenizer: Any, item: Item, system_prompt: str | None, few_shot: Sequence[FewShotExample] = ()
) -> str:
    """The prompt text the model sees: with a chat template, system message, few-shot user/assistant turns and
    the item's prompt; without one, the same parts joined by blank lines."""
    if not getattr(tokenizer, "chat_template", None):
        parts = [system_prompt] if system_prompt is not None else []
        parts += [f"{ex.prompt}\n{ex.completion}" for ex in few_shot]
        return "\n\n".join([*parts, item.prompt])
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    for ex in few_shot:
        messages += [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.completion}]
    messages.append({"role": "user", "content": item.prompt})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(
    tokenizer: Any, item: Item, system_prompt: str | None, few_shot: Sequence[FewShotExample] = ()
) -> list[int]:
    return tokenizer.encode(render_prompt(tokenizer, item, system_prompt, few_shot), add_special_tokens=False)


class TaskPrompts:
    """Each task's prompt template: its own system prompt (else ``data.system_prompt``) and few-shot examples."""

    def __init__(self, data: DataConfig) -> None:
        self.default_system = data.system_prompt
        self.tasks = {t.name: t for t in data.tasks}

    def encode(self, tokenizer: Any, item: Item) -> list[int]:
        task = self.tasks.get(item.task)
        if task is None:
            return encode_prompt(tokenizer, item, self.default_system)
        system = task.system_prompt if task.system_prompt is not None else self.default_system
        return encode_prompt(tokenizer, item, system, task.few_shot)


def reference_solution(item: Item, field: str) -> str | None:
    """The demonstration for ``item``: its ``field`` column, or with ``field == 'answer'`` the answer in answer
    tags (the format the built-in tiny model is warmed up on); None when the item has none."""
    if field == "answer":
        return None if item.answer is None else f"<answer>{item.answer}</answer>"
    value = item.meta.get(field)
    return value if isinstance(value, str) and value else None
