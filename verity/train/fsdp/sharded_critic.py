"""One rank's share of the critic (``algo.advantage: gae``) under the fsdp2 learner group.

The critic is sharded like the policy with FSDP2. ``algo.critic: policy``: only the value head is a unit of its
own; the backbone is the rank's sharded policy, read without gradient through its root (``LogprobRoot`` with
``hidden``). ``algo.critic: separate``: the critic's decoder layers and its root (the rest of its model and the
head) are units, and everything trains.

As in ``ShardedLearner``, every rank receives the whole batch, computes the same GAE returns and the loss
normalizer over the whole batch, then runs its token-balanced share of the rows; the summed gradients
(reduce-scatter) are the single critic's, and the metrics are summed over the ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.tensor import DTensor

from verity.algo.config import AlgoConfig
from verity.algo.losses import clipped_value_loss
from verity.algo.reduce import aggregate, masked_sum
from verity.train.batching import Batch
from verity.train.critic import Critic, batch_returns
from verity.train.fsdp.sharded import ShardedLearner, decoder_layers, shard_units


class CriticRoot(nn.Module):
    """The separate critic behind one forward, so its root parameters are gathered once per pass."""

    def __init__(self, critic: Critic) -> None:
        super().__init__()
        self.critic = critic

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.critic.values(input_ids, attention_mask)


class ShardedCritic:
    """The critic of one rank of ``learner``'s group; the driver sends every rank the same calls."""

    def __init__(self, critic: Critic, learner: ShardedLearner, lr: float, value_clip: float | None) -> None:
        self.learner = learner
        self.critic = critic
        self.value_clip = value_clip
        fsdp = learner.train_cfg.fsdp
        self.root: CriticRoot | None = None
        if critic.train_backbone:
            self.root = CriticRoot(critic)
            shard_units([*decoder_layers(critic.backbone), self.root], fsdp, learner.device)
            self.trained: nn.Module = critic
        else:
            if critic.backbone is not learner.model:
                raise ValueError("a critic on the policy's backbone must read this rank's sharded policy")
            shard_units([critic.head], fsdp, learner.device)
            self.trained = critic.head
        self.optimizer = torch.optim.AdamW(critic.trainable_parameters(), lr=lr)

    def _values(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        if self.root is not None:
            return self.root(input_ids, attention_mask)
        with torch.no_grad():  # the policy's backbone is frozen for the critic
            hidden, _ = self.learner.root(input_ids, attention_mask, 1.0, False, hidden=True)
        # An FSDP2 root keeps its parameters gathered after a forward until its backward, and this one has none:
        # put the policy's shards back (the learner's gradient clipping expects them).
        self.learner.root.reshard()
        return self.critic.head_values(hidden)

    def _share(self, batch: Batch) -> tuple[Tensor, Batch, float]:
        """This rank's rows, the batch of them (one row of weight 0 when it has none: every rank runs a pass)."""
        mine, passes = self.learner._share_passes(batch, lambda share: [share])
        part, weight = passes[0]
        return mine, part.to(self.learner.device), weight

    @torch.no_grad()
    def value_share(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """This rank's rows of ``batch`` and their values (R, T'), in the critic's precision."""
        mine, part, weight = self._share(batch)
        values = self._values(part.input_ids, part.attention_mask).cpu()
        (self.root or self.critic.head).reshard()  # no backward follows
        return mine, values if weight else values[:0]

    def fit(
        self, cfg: AlgoConfig, batch: Batch, rewards: Tensor, values: Tensor, kl_coef: float
    ) -> dict[str, float]:
        """``CriticTrainer.fit`` over the group: one step on the clipped value loss, normalized by the whole
        batch's completion tokens; the metrics are the whole batch's."""
        returns = batch_returns(cfg, batch, rewards, values, kl_coef)
        total = max(batch.loss_mask.float().sum().item(), 1.0)
        mine, part, weight = self._share(batch)
        rows = mine if weight else torch.tensor([0])
        width = part.input_ids.shape[1]
        device = self.learner.device
        old, target = values[rows, :width].to(device), returns[rows, :width].to(device)
        mask = part.loss_mask.float() * weight
        predicted = self._values(part.input_ids, part.attention_mask)
        token_loss = clipped_value_loss(predicted, old, target, self.value_clip)
        loss = aggregate(token_loss, mask, "token_mean", token_normalizer=total, seq_normalizer=1.0)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        error = masked_sum((predicted.detach() - target).abs(), mask)
        sums = torch.tensor([loss.item(), error.item(), mask.sum().item()], dtype=torch.float64)
        dist.all_reduce(sums)
        loss_sum, error_sum, tokens = sums.tolist()
        return {"critic/loss": loss_sum, "critic/abs_error": error_sum / max(tokens, 1.0)}

    def full_state(self) -> dict[str, Tensor]:
        """The trained parameters gathered (a collective), as plain CPU tensors: the head, or the whole critic."""
        state = self.trained.state_dict()
        return {
            name: (t.full_tensor() if isinstance(t, DTensor) else t).detach().cpu() for name, t in state.items()
        }

    def save_sharded(self, directory: Path) -> dict[str, Any]:
        """Write the sharded critic and its optimizer state into ``directory`` (each rank its own shards)."""
        model_state, optim_state = get_state_dict(self.trained, self.optimizer)
        dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(directory))
        return {}

    def load_sharded(self, directory: Path) -> None:
        model_state, optim_state = get_state_dict(self.trained, self.optimizer)
        state = {"model": model_state, "optimizer": optim_state}
        dcp.load(state, checkpoint_id=str(directory))
        set_state_dict(
            self.trained, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
        )
