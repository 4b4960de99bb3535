"""The reward actor of the Ray runtime, kept apart from torch so that it starts fast."""

from __future__ import annotations

from dataclasses import replace

from verity.rewards.config import RewardConfig
from verity.rewards.executor import RewardExecutor
from verity.types import Rollout


class RewardWorker:
    """Scores rollouts with the run's reward executor; returns them scored, with the executor's counts."""

    def __init__(self, cfg: RewardConfig) -> None:
        self.executor = RewardExecutor(cfg)

    def score(self, rollouts: list[Rollout]) -> tuple[list[Rollout], dict[str, float]]:
        scores = self.executor.score([r.item for r in rollouts], [r.completion.text for r in rollouts])
        scored = [replace(r, score=s) for r, s in zip(rollouts, scores, strict=True)]
        return scored, self.executor.stats()
