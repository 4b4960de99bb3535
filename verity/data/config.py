"""The ``data:`` section: task sources and their mixture, difficulty estimates, dynamic sampling, adaptive group
sizes, hard-focus, stages, ReLIFT, ViSurf, re-thinking and expert iteration. Every field is documented once,
here."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from verity.data.groups import template_fields
from verity.schema import Section

# "<metric> <op> <number>", e.g. "task/chain_sum/accuracy >= 0.8"
CONDITION = re.compile(r"^\s*(?P<key>[\w/@.\-]+)\s*(?P<op>>=|<=|>|<)\s*(?P<value>-?[\d.]+(?:e-?\d+)?)\s*$")


class FewShotExample(Section):
    """One worked example shown before a task's prompt (a user turn and an assistant turn)."""

    prompt: str = Field(description="The example question.")
    completion: str = Field(description="The example answer, written as the model should write it.")


class DifficultyConfig(Section):
    """Online pass-rate estimates, updated from every scored rollout."""

    decay: float = Field(
        1.0, gt=0, le=1, description="Per-observation decay of an item's old counts (1: plain running counts)."
    )
    prior_strength: float = Field(
        2.0, ge=0, description="Pseudo-trials of the task's pass rate mixed into each item's estimate."
    )
    task_momentum: float = Field(0.9, ge=0, lt=1, description="EMA momentum of each task's pass rate.")
    max_items: int = Field(100_000, gt=0, description="Most items tracked; the least recently seen go first.")


class DynamicSamplingConfig(Section):
    """DAPO dynamic sampling: drop groups whose rewards are all equal and draw more prompts to fill the batch."""

    enabled: bool = Field(False, description="Filter zero-variance groups and refill the batch.")
    max_rounds: int = Field(3, gt=0, description="Most generation rounds per step; short batches are padded.")


class AdaptiveGroupConfig(Section):
    """Per-item group size from its pass rate p: the smallest n with p^n + (1-p)^n <= target."""

    enabled: bool = Field(False, description="Choose each item's group size from its estimated pass rate.")
    min_size: int = Field(2, ge=2, description="Smallest group size.")
    max_size: int = Field(16, ge=2, description="Largest group size.")
    target: float = Field(0.25, gt=0, lt=1, description="Wanted chance that a group's rewards are all equal.")


class HardFocusConfig(Section):
    """DRIVE-style hard-focus: revisit the hardest items seen so far, with a larger group size."""

    fraction: float = Field(0.5, ge=0, le=1, description="Share of each batch drawn from the hard pool.")
    max_pass_rate: float = Field(0.5, ge=0, le=1, description="Items at or below this estimate count as hard.")
    min_trials: int = Field(1, ge=1, description="Rollouts an item needs before its estimate is trusted.")
    group_size: int = Field(16, ge=2, description="Group size spent on hard-pool items.")
    pool_size: int = Field(1024, gt=0, description="Most items kept as candidates for the hard pool.")


class StageConfig(Section):
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


class SftFeedConfig(Section):
    """Interleaved SFT steps on queued demonstrations: the cadence shared by ReLIFT, re-thinking and expert
    iteration (see docs/rethinking.md)."""

    enabled: bool = Field(False, description="Queue demonstrations and take SFT steps on them.")
    every: int = Field(4, gt=0, description="One SFT round after every this many RL steps (when any are queued).")
    batch_size: int = Field(8, gt=0, description="Demonstrations per SFT step.")
    queue_size: int = Field(256, gt=0, description="Most queued demonstrations; the oldest are dropped first.")
    lr_scale: float = Field(1.0, gt=0, description="SFT step size as a multiple of the RL learning rate.")


class ReliftConfig(SftFeedConfig):
    """ReLIFT: queue items on which every rollout failed and interleave SFT steps on their reference solutions."""

    enabled: bool = Field(False, description="Queue all-failed items that have a reference solution.")


DECOMPOSE_TEMPLATE = "{prompt}\nBreak the problem into smaller steps, solve each step, then give the final answer."
REFLECT_TEMPLATE = "{prompt}\nA previous answer was wrong: {wrong}\nFind the mistake and solve the problem again."


class RethinkConfig(SftFeedConfig):
    """Cog-Rethinker: groups in which every rollout failed are rolled out again, first from a decomposition prompt,
    then (those still unsolved) from a prompt quoting a wrong answer; correct re-rollouts are queued for SFT under
    the item's direct prompt."""

    enabled: bool = Field(False, description="Re-think all-failed groups and learn from the rescued ones.")
    decompose_template: str | None = Field(
        DECOMPOSE_TEMPLATE, description="Decomposition prompt, with {prompt}; null skips this stage."
    )
    reflect_template: str | None = Field(
        REFLECT_TEMPLATE, description="Reflection prompt, with {prompt} and {wrong} (a failed answer); null skips."
    )
    group_size: int | None = Field(
        None, gt=0, description="Rollouts per re-thinking stage (unset: as many as the group)."
    )
    in_batch: bool = Field(
        True,
        description="A rescued group replaces its failed group in the RL batch, under its re-thinking prompt.",
    )
    every: int = Field(8, gt=0, description="One SFT round after every this many RL steps (when any are queued).")
    batch_size: int = Field(16, gt=0, description="Demonstrations per SFT step.")

    @field_validator("decompose_template", "reflect_template")
    @classmethod
    def _check_template(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        allowed = {"prompt", "wrong"} if info.field_name == "reflect_template" else {"prompt"}
        fields = template_fields(value)
        if "prompt" not in fields or not fields <= allowed:
            raise ValueError(f"the template needs {{prompt}} and may use only {sorted(allowed)}; got {value!r}")
        return value


class ExpertIterationConfig(SftFeedConfig):
    """Expert iteration (BFS-Prover-V2): the policy's own correct rollouts of hard items are queued (off-policy)
    and periodically trained on by SFT, keeping those whose NLL under the current policy lies between two
    quantiles."""

    enabled: bool = Field(False, description="Queue correct rollouts of hard items and fine-tune on them.")
    max_pass_rate: float = Field(
        0.75, gt=0, le=1, description="Items whose group solved more than this share are too easy: not queued."
    )
    low_quantile: float = Field(0.1, ge=0, lt=1, description="Drop queued samples below this NLL quantile.")
    high_quantile: float = Field(0.9, gt=0, le=1, description="Drop queued samples above this NLL quantile.")
    batch_size: int = Field(32, gt=0, description="Demonstrations per SFT step (a round may take several).")
    queue_size: int = Field(512, gt=0, description="Most queued demonstrations; the oldest are dropped first.")

    @model_validator(mode="after")
    def _check_quantiles(self) -> ExpertIterationConfig:
        if self.low_quantile >= self.high_quantile:
            raise ValueError(
                f"low_quantile ({self.low_quantile}) must be below high_quantile ({self.high_quantile})"
            )
        return self


class TaskConfig(Section):
    """One source of items. ``source`` picks the kind; the other fields apply to it."""

    source: Literal["reasoning_gym", "jsonl", "parquet", "datasets", "generator"] = Field(
        description="Kind of source ('datasets': a Hugging Face dataset saved with save_to_disk)."
    )
    name: str = Field(description="Task family: a reasoning-gym dataset name, or a label for the other kinds.")
    path: str | None = Field(None, description="jsonl/parquet: file of rows; datasets: the saved directory.")
    eval_path: str | None = Field(None, description="Held-out file or directory (default: last rows of `path`).")
    split: str = Field("train", description="datasets: split to train on when the directory holds several.")
    eval_split: str | None = Field(None, description="datasets: held-out split (default: last rows of `split`).")
    prompt_field: str = Field("prompt", description="Column holding the prompt.")
    answer_field: str = Field("answer", description="Column holding the reference answer.")
    image_field: str = Field(
        "images",
        description="Column holding the prompt's image or list of images (paths relative to the file, bytes, "
        "datasets image cells or arrays); rows without it are text items.",
    )
    function: str | None = Field(None, description="generator: 'module:function' taking (seed, index) -> dict.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Settings passed to the family/generator.")
    weight: float = Field(1.0, gt=0, description="Share of this task in the training mixture.")
    system_prompt: str | None = Field(None, description="System message for this task (overrides data's).")
    few_shot: list[FewShotExample] = Field(default_factory=list, description="Worked examples before the prompt.")

    @model_validator(mode="after")
    def _check_source_fields(self) -> TaskConfig:
        if self.source in ("jsonl", "parquet", "datasets") and not self.path:
            raise ValueError(f"a {self.source} task needs `path`")
        if self.source == "generator" and not self.function:
            raise ValueError("a generator task needs `function: module:function`")
        return self


class DataConfig(Section):
    """What the model practises and is evaluated on, and how items are chosen (see docs/data.md)."""

    tasks: list[TaskConfig] = Field(
        default_factory=lambda: [TaskConfig(source="reasoning_gym", name="chain_sum")],
        description="Task sources mixed by weight.",
    )
    system_prompt: str | None = Field(None, description="Optional system message before every prompt.")
    eval_items: int = Field(200, gt=0, description="Held-out items per task (seeds disjoint from training).")
    sampling: Literal["mixture", "balanced"] = Field(
        "mixture", description="'mixture': each prompt's task drawn by weight; 'balanced': equal share per task."
    )
    difficulty: DifficultyConfig = Field(default_factory=DifficultyConfig, description="Online pass rates.")
    dynamic_sampling: DynamicSamplingConfig = Field(
        default_factory=DynamicSamplingConfig, description="Drop zero-variance groups and refill (DAPO)."
    )
    adaptive_group: AdaptiveGroupConfig = Field(
        default_factory=AdaptiveGroupConfig, description="Group size per item from its pass rate."
    )
    stages: list[StageConfig] = Field(default_factory=list, description="Curriculum stages, in order.")
    relift: ReliftConfig = Field(default_factory=ReliftConfig, description="SFT on all-failed items (ReLIFT).")
    rethink: RethinkConfig = Field(
        default_factory=RethinkConfig, description="Re-think all-failed groups, SFT on rescues (Cog-Rethinker)."
    )
    expert_iteration: ExpertIterationConfig = Field(
        default_factory=ExpertIterationConfig, description="SFT on own successes on hard items (BFS-Prover-V2)."
    )
    visurf: bool = Field(False, description="Put an item's reference solution in its group (ViSurf).")
    reference_field: str = Field(
        "solution",
        description="Item field with a reference solution (ReLIFT, ViSurf); 'answer': <answer>{answer}</answer>.",
    )

    @model_validator(mode="after")
    def _check_stages(self) -> DataConfig:
        names = {t.name for t in self.tasks}
        for i, stage in enumerate(self.stages):
            unknown = sorted(set(stage.tasks or []) - names)
            if unknown:
                raise ValueError(f"stages.{i}.tasks: unknown task(s) {unknown}; tasks are {sorted(names)}")
            if i < len(self.stages) - 1 and stage.steps is None and stage.until is None:
                raise ValueError(f"stages.{i} ({stage.name}): only the last stage may lack `steps` and `until`")
        return self
