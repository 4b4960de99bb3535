"""Single-rollout RL (MSSR-style, one sample per prompt) as one estimator module: the running baseline that
replaces the group, its settings, and its registration as ``algo.advantage: single_rollout``.

Settings (keys of the ``algo:`` section, read only under ``algo.advantage: single_rollout``): ``baseline_key``
and ``baseline_decay``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from verity.algo.advantages import result_dtype
from verity.algo.contract import AdvantageInputs, AlgoConfig, RunConfig, advantage_estimator


class SingleRolloutSettings(BaseModel):
    """The single_rollout estimator's keys in the ``algo:`` section."""

    model_config = ConfigDict(extra="forbid")

    baseline_key: Literal["item", "task"] = Field(
        "item", description="single_rollout: keep one running baseline per item id or per task family."
    )
    baseline_decay: float = Field(
        0.9,
        ge=0,
        lt=1,
        description="single_rollout: decay d of each key's baseline, b <- d b + (1 - d) (the key's mean reward in "
        "the batch), one step per batch (higher = slower). Unseen keys use the mean of all rewards so far.",
    )


class RunningBaseline:
    """Group-free baseline for one rollout per prompt (MSSR-style single-rollout RL).

    Per key k (an item id or a task family) it keeps an exponential moving average of the key's mean reward in
    each batch, updated once per batch: ``b_k <- d b_k + (1 - d) mean(r_i : k_i = k)``. A key's first update
    starts from the global mean (from its own batch mean in the very first batch). The global mean ``m`` is the
    plain running mean of every reward seen so far; a key never seen before gets ``b_k = m`` (0 before any
    reward), so the first visit of a prompt is compared with the policy's overall success rate rather than with
    0. ``advantages`` uses the baselines from before the batch, then folds the batch in: no sample is its own
    baseline, and the order of the samples within a batch changes nothing.
    """

    def __init__(self, decay: float = 0.9) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"baseline decay (algo.baseline_decay) must be in [0, 1), got {decay}")
        self.decay = decay
        self.means: dict[str, float] = {}
        self.global_mean = 0.0
        self.count = 0

    def baseline(self, keys: Sequence[str]) -> Tensor:
        """``b_k`` per key (N,), float64; unseen keys get the global mean."""
        return torch.tensor([self.means.get(k, self.global_mean) for k in keys], dtype=torch.float64)

    def fold(self, keys: Sequence[str], rewards: Tensor) -> None:
        """Fold one batch in: one EMA step per key with the key's batch-mean reward, and the running mean."""
        values = rewards.double().tolist()
        by_key: dict[str, list[float]] = {}
        for key, reward in zip(keys, values, strict=True):
            by_key.setdefault(key, []).append(reward)
        for key, batch in by_key.items():
            batch_mean = math.fsum(batch) / len(batch)  # fsum is exact, so the order of samples cannot matter
            prior = self.means.get(key, self.global_mean if self.count else batch_mean)
            self.means[key] = self.decay * prior + (1 - self.decay) * batch_mean
        if values:
            total = self.count + len(values)
            self.global_mean = (self.count * self.global_mean + math.fsum(values)) / total
            self.count = total

    def advantages(self, keys: Sequence[str], rewards: Tensor) -> Tensor:
        """``A_i = r_i - b_{k_i}`` (N,) with the baselines from before this batch, then fold the batch in."""
        if rewards.dim() != 1 or len(keys) != rewards.shape[0]:
            raise ValueError(f"got {len(keys)} baseline keys for rewards of shape {tuple(rewards.shape)}")
        adv = rewards.double() - self.baseline(keys).to(rewards.device)
        self.fold(keys, rewards)
        return adv.to(result_dtype(rewards))

    def update(self, step: int, metrics: Mapping[str, float]) -> tuple[dict[str, float], list[str]]:
        """Nothing to do between steps: the baseline folds each batch in as it computes its advantages."""
        return {}, []

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "means": dict(self.means),
            "global_mean": self.global_mean,
            "count": self.count,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.means = {str(k): float(v) for k, v in state["means"].items()}
        self.global_mean = float(state["global_mean"])
        self.count = int(state["count"])


def baseline_of(settings: SingleRolloutSettings, run: RunConfig) -> RunningBaseline:
    return RunningBaseline(settings.baseline_decay)


@advantage_estimator(
    "single_rollout", needs=("tasks", "item_ids"), settings=SingleRolloutSettings, state=baseline_of
)
def single_rollout(x: AdvantageInputs, cfg: AlgoConfig) -> Tensor:
    keys = x.tasks if x.settings.baseline_key == "task" else x.item_ids
    if x.state is None or keys is None or len(keys) != x.rewards.shape[0]:
        raise ValueError(
            f"algo.advantage=single_rollout needs its state (a RunningBaseline) and one {x.settings.baseline_key} "
            f"key per reward (pass {'tasks' if x.settings.baseline_key == 'task' else 'item_ids'})"
        )
    return x.state.advantages(keys, x.sequence_rewards)
