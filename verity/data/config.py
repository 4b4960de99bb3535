"""Settings of the data path: difficulty estimates, dynamic sampling, adaptive group sizes, hard-focus, stages,
ReLIFT and ViSurf. ``verity.config.DataConfig`` holds one of each; every field is documented once, here."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# "<metric> <op> <number>", e.g. "task/chain_sum/accuracy >= 0.8"
CONDITION = re.compile(r"^\s*(?P<key>[\w/@.\-]+)\s*(?P<op>>=|<=|>|<)\s*(?P<value>-?[\d.]+(?:e-?\d+)?)\s*$")


class DataSection(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FewShotExample(DataSection):
    """One worked example shown before a task's prompt (a user turn and an assistant turn)."""

    prompt: str = Field(description="The example question.")
    completion: str = Field(description="The example answer, written as the model should write it.")


class DifficultyConfig(DataSection):
    """Online pass-rate estimates, updated from every scored rollout."""

    decay: float = Field(
        1.0, gt=0, le=1, description="Per-observation decay of an item's old counts (1: plain running counts)."
    )
    prior_strength: float = Field(
        2.0, ge=0, description="Pseudo-trials of the task's pass rate mixed into each item's estimate."
    )
    task_momentum: float = Field(0.9, ge=0, lt=1, description="EMA momentum of each task's pass rate.")
    max_items: int = Field(100_000, gt=0, description="Most items tracked; the least recently seen go first.")


class DynamicSamplingConfig(DataSection):
    """DAPO dynamic sampling: drop groups whose rewards are all equal and draw more prompts to fill the batch."""

    enabled: bool = Field(False, description="Filter zero-variance groups and refill the batch.")
    max_rounds: int = Field(3, gt=0, description="Most generation rounds per step; short batches are padded.")


class AdaptiveGroupConfig(DataSection):
    """Per-item group size from its pass rate p: the smallest n with p^n + (1-p)^n <= target."""

    enabled: bool = Field(False, description="Choose each item's group size from its estimated pass rate.")
    min_size: int = Field(2, ge=2, description="Smallest group size.")
    max_size: int = Field(16, ge=2, description="Largest group size.")
    target: float = Field(0.25, gt=0, lt=1, description="Wanted chance that a group's rewards are all equal.")


class HardFocusConfig(DataSection):
    """DRIVE-style hard-focus: revisit the hardest items seen so far, with a larger group size."""

    fraction: float = Field(0.5, ge=0, le=1, description="Share of each batch drawn from the hard pool.")
    max_pass_rate: float = Field(0.5, ge=0, le=1, description="Items at or below this estimate count as hard.")
    min_trials: int = Field(1, ge=1, description="Rollouts an item needs before its estimate is trusted.")
    group_size: int = Field(16, ge=2, description="Group size spent on hard-pool items.")
    pool_size: int = Field(1024, gt=0, description="Most items kept as candidates for the hard pool.")


class StageConfig(DataSection):
    """One stage of a curriculum. Fields left unset keep the run's settings."""

    name: str = Field(description="Label shown in metrics and logs.")
    steps: int | None = Field(None, gt=0, description="Move to the next stage after this many steps in it.")
    until: str | None = Field(
        None, description="Move on once a step's metric meets this, e.g. 'task/easy/accuracy >= 0.8'."
    )
    tasks: list[str] | None = Field(None, description="Task names drawn in this stage (default: all).")
    sampling: Literal["mixture", "balanced"] | None = Field(None, description="Overrides data.sampling.")
    max_new_tokens: int | None = Field(None, gt=0, description="Overrides rollout.max_new_tokens.")
    group_size: int | None = Field(None, gt=0, description="Overrides rollout.group_size.")
    hard_focus: HardFocusConfig | None = Field(None, description="Revisit the hardest items in this stage.")

    @field_validator("until")
    @classmethod
    def _check_condition(cls, value: str | None) -> str | None:
        if value is not None and not CONDITION.match(value):
            raise ValueError(f"{value!r} is not a condition of the form '<metric> <op> <number>' (op: >= <= > <)")
        return value


class ReliftConfig(DataSection):
    """ReLIFT: queue items on which every rollout failed and interleave SFT steps on their reference solutions."""

    enabled: bool = Field(False, description="Queue all-failed items that have a reference solution.")
    every: int = Field(4, gt=0, description="One SFT step after every this many RL steps (when any are queued).")
    batch_size: int = Field(8, gt=0, description="Demonstrations per SFT step.")
    queue_size: int = Field(256, gt=0, description="Most queued items; the oldest are dropped first.")
    lr_scale: float = Field(1.0, gt=0, description="SFT step size as a multiple of the RL learning rate.")
