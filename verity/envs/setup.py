"""Building a run's episode runner from its ``env:`` section."""

from __future__ import annotations

from functools import partial
from typing import Any

from verity.config import Config
from verity.data.prompts import TaskPrompts
from verity.envs.registry import env_factory
from verity.rollout.engine import Engine
from verity.rollout.episode import Budget, EpisodeRunner, Guidance


def build_episode_runner(
    cfg: Config, engine: Engine, tokenizer: Any, processor: Any = None
) -> EpisodeRunner | None:
    """The runner of ``cfg.env`` (None for a single-turn run). Environments whose factory takes ``tags`` get
    ``env.tool_tags`` unless their settings name their own; a vision-language model's ``processor`` encodes
    image items' first prompts (their images stay with the context for every turn)."""
    env = cfg.env
    if env is None:
        return None
    make_env = env_factory(env.name, env.settings, defaults={"tags": env.tool_tags.model_dump()})
    turn_tokens = env.turn_tokens or cfg.rollout.max_new_tokens
    budget = Budget(env.max_turns, env.max_tokens, turn_tokens, env.step_timeout_s)
    guidance = Guidance(env.hint_field, env.hint_template, cfg.eval.threshold) if env.guidance else None
    encode = partial(TaskPrompts(cfg.data, processor).encode, tokenizer)
    return EpisodeRunner(engine, tokenizer, encode, make_env, budget, guidance)
