"""The critic of the fsdp2 learner group as the loop sees it: ``CriticTrainer``'s interface (``values``, ``fit``,
``state_dict``/``load_state_dict``) over the critic shares its ranks hold
(``verity.train.fsdp.sharded_critic``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from verity.algo.config import AlgoConfig
from verity.train.batching import Batch
from verity.train.checkpoint import ShardedPart
from verity.train.fsdp.group import LearnerGroup, LearnerGroupError


class GroupCritic:
    """The group's critic; every call is a command to every rank (with the group's time limits and errors)."""

    def __init__(self, group: LearnerGroup) -> None:
        if not group.spec.critic:
            raise LearnerGroupError("this learner group was started without a critic (GroupSpec.critic)")
        self.group = group

    @torch.no_grad()
    def values(self, batch: Batch) -> Tensor:
        """The critic's values (B, T) of a rollout batch (each rank computes its share of the rows)."""
        out = torch.zeros(batch.input_ids.shape, dtype=torch.float32)
        for rows, values in self.group._call("critic_values", batch):
            out[rows, : values.shape[1]] = values.float()
        return out

    def fit(
        self, cfg: AlgoConfig, batch: Batch, rewards: Tensor, values: Tensor, kl_coef: float
    ) -> dict[str, float]:
        """One critic update towards the GAE returns of ``batch``; the metrics are the whole batch's."""
        return self.group._call("critic_fit", cfg, batch, rewards, values, kl_coef)[0]

    def state_dict(self) -> Any:
        """A checkpoint part that writes itself: every rank's shards of the critic and its optimizer."""
        return _CriticState(self.group)

    def load_state_dict(self, state: Any) -> None:
        if not isinstance(state, ShardedPart) or state.directory is None:
            raise LearnerGroupError(
                "this checkpoint holds a single critic's state; resume it with train.strategy=single"
            )
        self.group._call("critic_load", state.directory)


class _CriticState:
    def __init__(self, group: LearnerGroup) -> None:
        self.group = group

    def save_into(self, directory: Path) -> dict[str, Any]:
        return self.group._call("critic_save", directory)[0]
