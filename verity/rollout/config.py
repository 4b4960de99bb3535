"""The ``rollout:`` section: which engine, how it samples, and each backend's own settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from verity.registry import validated
from verity.rollout.registry import ENGINES
from verity.rollout.vllm_config import VLLMConfig
from verity.rollout.workflows.registry import resolve_workflow
from verity.schema import Section
from verity.types import SamplingParams


class ReplayConfig(Section):
    """DeepSearch's replay buffer of cached solutions (``rollout.tree.replay``); see docs/tree-search.md."""

    enabled: bool = Field(True, description="Cache a correct path of problems the tree solved but found hard.")
    threshold: float = Field(
        0.25,
        gt=0,
        le=1,
        description="delta: a solved tree caches its problem while its share of correct paths is below this; a "
        "cached problem leaves once its direct samples reach it.",
    )
    capacity: int = Field(1024, gt=0, description="Most cached problems; the oldest leaves first.")


class TreeConfig(Section):
    """Tree-search rollouts (``rollout.workflow: tree``, DeepSearch); see docs/tree-search.md."""

    width: int = Field(4, gt=0, description="Branches grown per expansion, each run to its end.")
    max_depth: int = Field(8, gt=0, description="d_T: most steps on a path; the last step holds the rest.")
    step_delimiter: str | None = Field(
        "\n", description="A step ends after the token whose text contains this (None: no delimiter)."
    )
    step_tokens: int = Field(0, ge=0, description="A step also ends after this many tokens (0: no limit).")
    quality_weight: float = Field(0.4, description="lambda_1: weight of tanh(Q_parent) in the frontier score.")
    entropy_weight: float = Field(
        0.0, description="lambda_2: weight of the step entropy in the frontier score (negative: prefer confident)."
    )
    depth_weight: float = Field(0.01, description="lambda_3: weight of sqrt(depth / max_depth) in the score.")
    paths: Literal["backed_up", "all"] = Field(
        "backed_up",
        description="Paths trained on: 'backed_up' (each expansion's correct paths, or its most confident wrong "
        "one) or 'all' (every path grown).",
    )
    gamma_min: float = Field(0.1, ge=0, le=1, description="Least share of a result backed up to an early step.")
    q_temperature: float = Field(
        1.0, gt=0, description="eps_q of the interior values' soft clip q_max tanh(q / eps_q)."
    )
    q_max: float = Field(1.0, gt=0, description="q_max of the interior values' soft clip.")
    replay: ReplayConfig = Field(default_factory=ReplayConfig, description="Cached solutions of hard problems.")


class RolloutConfig(Section):
    """The rollout engine and how it samples."""

    prompts_per_step: int = Field(8, gt=0, description="Distinct prompts per RL step.")
    group_size: int = Field(8, gt=0, description="Completions sampled per prompt (G).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (also applied to training log-probs).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int = Field(0, ge=0, description="Sample among the k most likely tokens only (0: no limit).")
    max_new_tokens: int = Field(32, gt=0, description="Longest completion, in tokens.")
    sync_tolerance: float = Field(
        0.05,
        gt=0,
        description="An engine with its own copy of the weights (vLLM, Ray rollout workers) is verified after "
        "each sync: the largest log-prob difference from the learner on a fixed probe "
        "(verity/rollout/sync_check.py); fp32 on both sides agrees to ~1e-5, a bf16 engine to ~1e-2.",
    )
    engine: str = Field(
        "hf",
        description="Rollout engine: 'hf' (transformers, shares the learner's module in the local runtime), "
        "'vllm' (its own copy of the policy, weights streamed on each sync; see docs/vllm.md), or a user's own "
        "backend by import path 'package.module:factory' (see verity/rollout/engine.py).",
    )
    engine_settings: dict[str, Any] = Field(
        default_factory=dict, description="Settings a user's own engine reads (its factory gets this section)."
    )
    vllm: VLLMConfig = Field(default_factory=VLLMConfig, description="Settings of the vLLM engine.")
    workflow: str | None = Field(
        None,
        description="Rollout workflow, what turns an item into its group of rollouts: 'single' (group_size "
        "completions of the prompt, scored by the verifiers), 'episode' (multi-turn episodes with the env: "
        "section's environment, which scores them), 'tree' (group_size root-to-leaf paths of a search tree over "
        "reasoning steps, DeepSearch; see docs/tree-search.md), or a user's own Workflow class by import path "
        "'package.module:Class' (see verity/rollout/workflows/base.py). None: 'episode' with an env: section, "
        "else 'single'.",
    )
    tree: TreeConfig = Field(default_factory=TreeConfig, description="Settings of the tree workflow.")

    @model_validator(mode="before")
    @classmethod
    def _renamed_strategy(cls, data: Any) -> Any:
        if isinstance(data, dict) and "strategy" in data:
            was = {"sample": "single", "tree": "tree"}.get(str(data["strategy"]), "single")
            raise ValueError(f"rollout.strategy is now rollout.workflow: write rollout.workflow: {was}")
        return data

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, spec: str) -> str:
        return validated(ENGINES.resolve, spec)

    @field_validator("workflow")
    @classmethod
    def _known_workflow(cls, spec: str | None) -> str | None:
        return spec if spec is None else validated(resolve_workflow, spec)

    def sampling(self) -> SamplingParams:
        """The run's sampling parameters (a curriculum stage may change the length and group size)."""
        return SamplingParams(self.max_new_tokens, self.temperature, self.top_p, self.top_k, n=self.group_size)
