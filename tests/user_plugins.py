"""A user's own estimator and engine, named in configs by import path ('user_plugins:...'); they record what the
loop handed them so the tests can check it."""

from __future__ import annotations

from typing import Any

import torch

from verity.algo.registry import AdvantageInputs, advantage_estimator
from verity.rollout.engine import EngineSpec, SamplingParams
from verity.rollout.hf import build_hf_engine
from verity.types import Completion

CALLS: dict[str, list[Any]] = {"estimator": [], "generate": [], "load_weights": []}


@advantage_estimator(needs=("tasks",))
def above_task_mean(x: AdvantageInputs, cfg: Any) -> torch.Tensor:
    """Reward minus the mean reward of the sample's task in this batch (no std): a user's own baseline."""
    CALLS["estimator"].append({"tasks": list(x.tasks or []), "values": x.values, "turns": x.turns})
    tasks = list(x.tasks or [])
    means = {t: x.rewards[[i for i, u in enumerate(tasks) if u == t]].float().mean() for t in set(tasks)}
    return x.rewards.float() - torch.stack([means[t] for t in tasks])


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
