"""The ``env:`` section of a run config: which environment, the episode budgets, tool tags and guidance.
The run's ``Config.env`` holds one (or None for single-turn runs); every field is documented once, here."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from verity.schema import Section


class ToolTagsConfig(Section):
    """The tags of a tool call, ``<tool>name: arguments</tool>``, and of its answer, ``<result>...</result>``."""

    call_open: str = Field("<tool>", min_length=1, description="Opens a tool call in model output.")
    call_close: str = Field("</tool>", min_length=1, description="Closes a tool call; the model's turn ends here.")
    result_open: str = Field("<result>", min_length=1, description="Opens an environment's answer.")
    result_close: str = Field("</result>", min_length=1, description="Closes an environment's answer.")


class EnvConfig(Section):
    """Multi-turn episodes: the model and an environment take turns (see docs/multiturn.md)."""

    name: str = Field(
        description="A registered environment ('calculator', 'tools', 'guessing') or an import "
        "path 'package.module:Factory'."
    )
    settings: dict[str, Any] = Field(default_factory=dict, description="Keywords for the environment's factory.")
    max_turns: int = Field(4, gt=0, description="Most model turns per episode; the episode ends after the last.")
    max_tokens: int = Field(
        96, gt=0, description="Most completion tokens per episode, model and environment tokens together."
    )
    turn_tokens: int | None = Field(
        None, gt=0, description="Most tokens per model turn (default: rollout.max_new_tokens)."
    )
    step_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest wait for one env.step; past it the episode ends with reward 0 (counted in "
        "env/timeouts). Raise it for environments that run slow tools.",
    )
    tool_tags: ToolTagsConfig = Field(
        default_factory=ToolTagsConfig, description="Tool tags, given to environments that take `tags`."
    )
    guidance: bool = Field(
        False, description="Agent-RLVR: re-attempt a group whose every episode failed, with its item's hint."
    )
    hint_field: str = Field("hint", description="Item field holding the hint for guided re-attempts.")
    hint_template: str = Field(
        "{prompt}\nHint: {hint}", description="The guided attempt's first message, from the prompt and the hint."
    )
