"""Reward configuration: which verifiers, how they combine, and how they are executed."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from verity.rewards.compose import Component

# Built-in verifiers with their own ``timeout_s`` setting, which must fit inside ``reward.timeout_s``.
_OWN_TIMEOUT = ("code", "reward_model", "judge", "prm_judge")


class VerifierSpec(BaseModel):
    """One verifier of the reward. A bare string in a config list is shorthand for ``{name: <string>}``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Registered verifier name (e.g. 'accuracy') or import path 'package.module:fn'.")
    weight: float = Field(1.0, description="Weight of this verifier's value in the summed reward.")
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Verifier-specific keyword settings, e.g. {abs_tol: 0.01}."
    )
    label: str | None = Field(
        None, description="Name of this component in Score.components and metrics; defaults to `name`."
    )
    gate: str | None = Field(
        None, description="Label of another component; this one counts only when that one scores >= gate_min."
    )
    gate_min: float = Field(1.0, description="Threshold the gating component must reach.")

    @field_validator("weight", "gate_min")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @property
    def key(self) -> str:
        return self.label or self.name


class RewardConfig(BaseModel):
    """The reward of a run. The default is the quickstart reward: the 'accuracy' verifier alone, weight 1."""

    model_config = ConfigDict(extra="forbid")

    verifiers: list[VerifierSpec] = Field(
        default_factory=lambda: [VerifierSpec(name="accuracy")],
        description="Verifiers whose weighted (and gated) values sum to the reward.",
    )
    workers: int = Field(2, ge=1, description="Worker processes that run verifiers (ignored when in_process).")
    timeout_s: float = Field(
        30.0, gt=0, description="Wall-clock limit for scoring one completion in a worker; past it the score is 0."
    )
    batch_size: int = Field(
        16,
        ge=1,
        description="Completions a worker scores in one call when a verifier is batched (reward_model, judge, "
        "prm_judge); reward.timeout_s then bounds that whole call.",
    )
    in_process: bool = Field(
        False, description="Run verifiers in the calling process: for cheap pure-Python verifiers; no timeout."
    )
    start_method: Literal["forkserver", "spawn"] = Field(
        "forkserver", description="How worker processes start; never 'fork', the trainer holds torch threads."
    )

    @field_validator("verifiers", mode="before")
    @classmethod
    def _names_as_specs(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _labels_and_gates(self) -> RewardConfig:
        if not self.verifiers:
            raise ValueError("verifiers: give at least one verifier, e.g. [accuracy]")
        keys = [v.key for v in self.verifiers]
        for i, spec in enumerate(self.verifiers):
            if keys.count(spec.key) > 1:
                raise ValueError(f"verifiers[{i}]: {spec.key!r} appears twice; give each a distinct `label`")
            if spec.gate is not None and (spec.gate not in keys or spec.gate == spec.key):
                raise ValueError(f"verifiers[{i}].gate: {spec.gate!r} is not another component; labels: {keys}")
            sandbox_s = spec.settings.get("timeout_s", 0) if spec.name in _OWN_TIMEOUT else 0
            if isinstance(sandbox_s, int | float) and sandbox_s >= self.timeout_s:
                raise ValueError(
                    f"verifiers[{i}].settings.timeout_s ({sandbox_s:g} s) must be below reward.timeout_s "
                    f"({self.timeout_s:g} s for one whole completion or batched call): raise "
                    "reward.timeout_s or lower the setting"
                )
        return self

    def components(self) -> list[Component]:
        """The verifiers as picklable components for ``ComposedReward``."""
        return [Component(v.key, v.name, v.weight, dict(v.settings), v.gate, v.gate_min) for v in self.verifiers]
