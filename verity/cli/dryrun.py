"""``verity train CONFIG --dry-run``: the resolved config and the first rendered prompts, without training."""

from __future__ import annotations

from typing import Any

import yaml

from verity.config import Config
from verity.data.prompts import render_prompt
from verity.data.sources import build_source

PROMPTS_PER_TASK = 2


def dry_run(cfg: Config) -> str:
    """The text ``--dry-run`` prints: the config with every default filled in, then for each task its first
    training prompts exactly as the model will see them, with their reference answers."""
    tokenizer, note = _prompt_tokenizer(cfg)
    lines = ["# resolved config", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).rstrip(), ""]
    lines.append(f"# first rendered prompts ({note})")
    for task in cfg.data.tasks:
        source = build_source(task, cfg.seed, cfg.eval.items or cfg.data.eval_items)
        for index in range(PROMPTS_PER_TASK):
            item = source.train_item(index)
            system = task.system_prompt if task.system_prompt is not None else cfg.data.system_prompt
            rendered = render_prompt(tokenizer, item, system, task.few_shot)
            lines += [f"--- {item.id} (answer: {item.answer!r})", rendered]
    return "\n".join(lines)


def _prompt_tokenizer(cfg: Config) -> tuple[Any, str]:
    """The tokenizer whose chat template renders prompts: the model's own, or for a tiny base not built yet the
    same template on a character tokenizer."""
    from verity.build import held_out_keys
    from verity.model.loading import load_tokenizer
    from verity.model.tokenizer import VL_CHAT_TEMPLATE, build_char_tokenizer
    from verity.run.base import BUILTIN_VL, BUILTINS, base_cache_dir

    if cfg.model.name not in BUILTINS:
        return load_tokenizer(cfg.model.name), f"chat template of {cfg.model.name}"
    cached = base_cache_dir(cfg, held_out_keys(cfg))
    if (cached / "config.json").is_file():
        return load_tokenizer(str(cached)), f"chat template of the cached base {cached}"
    tokenizer = build_char_tokenizer()
    if cfg.model.name == BUILTIN_VL:
        tokenizer.chat_template = VL_CHAT_TEMPLATE
    return tokenizer, "chat template of the tiny base, which is not built yet"
