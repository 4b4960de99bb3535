"""A user's own estimator and engine, named in configs by import path ('helpers.user_plugins:...'); they record
what the loop handed them so the tests can check it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from verity.algo.contract import AdvantageInputs, advantage_estimator
from verity.rollout.engine import EngineSpec
from verity.rollout.hf import build_hf_engine
from verity.types import Completion, SamplingParams

CALLS: dict[str, list[Any]] = {"estimator": [], "generate": [], "load_weights": []}


@advantage_estimator(needs=("tasks",))
def above_task_mean(x: AdvantageInputs, cfg: Any) -> torch.Tensor:
    """Reward minus the mean reward of the sample's task in this batch (no std): a user's own baseline."""
    CALLS["estimator"].append({"tasks": list(x.tasks or []), "values": x.values, "turns": x.turns})
    tasks = list(x.tasks or [])
    means = {t: x.rewards[[i for i, u in enumerate(tasks) if u == t]].float().mean() for t in set(tasks)}
    return x.rewards.float() - torch.stack([means[t] for t in tasks])


class DriftSettings(BaseModel):
    """The drifting baseline's own key in the ``algo:`` section."""

    model_config = ConfigDict(extra="forbid")
    drift_decay: float = Field(0.5, ge=0, lt=1, description="Weight of the old baseline in each update.")


class DriftingBaseline:
    """A user estimator's state: an exponential average of the batch mean reward, moved after every step from the
    step's logged ``reward/mean``; the advantage is the reward minus the average before the step."""

    def __init__(self, settings: DriftSettings, run: Any) -> None:
        self.decay = settings.drift_decay
        self.value = 0.0
        self.steps = 0

    def update(self, step: int, metrics: Mapping[str, float]) -> tuple[dict[str, float], list[str]]:
        self.value = self.decay * self.value + (1 - self.decay) * metrics["reward/mean"]
        self.steps += 1
        return {"drift/baseline": self.value}, []

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.value, self.steps = float(state["value"]), int(state["steps"])


@advantage_estimator(settings=DriftSettings, state=DriftingBaseline)
def drifting_baseline(x: AdvantageInputs, cfg: Any) -> torch.Tensor:
    """Reward minus the drifting baseline: a user's stateful estimator, named by import path."""
    return x.rewards.float() - x.state.value


class RecordingEngine:
    """Delegates to the HF engine and records each call: a backend written outside Verity."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.shared = inner.shared

    @property
    def version(self) -> int:
        return self.inner.version

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        CALLS["generate"].append((len(prompts), params.n))
        return self.inner.generate(prompts, params)

    def load_weights(self, weights: Any, version: int) -> None:
        CALLS["load_weights"].append(version)
        self.inner.load_weights(weights, version)

    def logprobs(
        self, prompts: list[list[int]], completions: list[list[int]], temperature: float
    ) -> list[list[float]]:
        return self.inner.logprobs(prompts, completions, temperature)

    def decode(self, token_ids: list[int]) -> str:
        return self.inner.decode(token_ids)

    def get_rng_state(self) -> Any:
        return self.inner.get_rng_state()

    def set_rng_state(self, state: Any) -> None:
        self.inner.set_rng_state(state)

    def close(self) -> None:
        self.inner.close()


def build_recording_engine(spec: EngineSpec) -> RecordingEngine:
    return RecordingEngine(build_hf_engine(spec))


def build_runtime(spec: Any) -> Any:
    """A user's runtime: the local one under another name. It states no capabilities, so it is taken as
    synchronous and unable to place the ranks of a learner group."""
    from verity.runtime.local import build_local_runtime

    return build_local_runtime(spec)
