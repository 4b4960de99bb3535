"""The local runtime: engine, verifiers and learner in one process. The engine shares the learner's module, so
a weight sync only moves the version (the HybridFlow actor that both generates and trains)."""

from __future__ import annotations

import time
from dataclasses import replace

from verity.rewards.executor import RewardExecutor
from verity.rollout.engine import SamplingParams
from verity.rollout.episode import single_turn_rollouts
from verity.rollout.hf import HFEngine
from verity.train.learner import Learner
from verity.types import Item, Rollout


class LocalRuntime:
    def __init__(self, engine: HFEngine, executor: RewardExecutor) -> None:
        self.engine = engine
        self.executor = executor
        self.timings: dict[str, float] = {}

    def rollout(self, items: list[Item], prompt_ids: list[list[int]], params: SamplingParams) -> list[Rollout]:
        """Generate ``params.n`` completions per item and score them; phase times land in ``timings``."""
        start = time.perf_counter()
        rollouts = single_turn_rollouts(self.engine, items, prompt_ids, params)
        scored = time.perf_counter()
        scores = self.executor.score([r.item for r in rollouts], [r.completion.text for r in rollouts])
        self.timings["time/generate"] = scored - start
        self.timings["time/score"] = time.perf_counter() - scored
        return [replace(r, score=s) for r, s in zip(rollouts, scores, strict=True)]

    def sync(self, learner: Learner) -> None:
        start = time.perf_counter()
        if self.engine.model is not learner.model:
            self.engine.load_weights(learner.weights(), learner.version)
        self.engine.version = learner.version
        self.timings["time/sync"] = time.perf_counter() - start

    def close(self) -> None:
        self.executor.close()
