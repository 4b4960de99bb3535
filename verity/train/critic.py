"""The learned value function for PPO with GAE (``algo.advantage: gae``).

A ``Critic`` reads a causal LM's last hidden states through a linear head. Its backbone is either the policy's
own model (``algo.critic: policy``: the backbone runs without gradient for the critic and only the head trains,
so the critic never pulls the policy's weights) or a separate model (``algo.critic: separate``: everything
trains). ``CriticTrainer`` fits it with the clipped value loss of ``verity.algo.losses``.

Alignment matches the policy's log-probs: ``values[:, t]`` is V of the state *before* token t is generated,
read from the hidden state at position t - 1 (``values[:, 0]`` is 0; position 0 is never a completion token).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from verity.algo.config import AlgoConfig
from verity.algo.losses import clipped_value_loss
from verity.algo.objective import critic_targets
from verity.algo.reduce import aggregate, masked_mean
from verity.train.batching import Batch


class Critic(nn.Module):
    """V(s_t) per token from a transformers causal LM: ``head(h_{t-1})``."""

    def __init__(self, backbone: PreTrainedModel, train_backbone: bool) -> None:
        super().__init__()
        hidden = backbone.config.get_text_config().hidden_size
        self.backbone = backbone
        self.train_backbone = train_backbone
        self.head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def values(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, T) values aligned with the policy's token log-probs."""
        with torch.set_grad_enabled(self.train_backbone and torch.is_grad_enabled()):
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return self.head_values(out.hidden_states[-1])

    def head_values(self, hidden: Tensor) -> Tensor:
        """(B, T) values from the backbone's last hidden states (B, T, H)."""
        head_dtype = self.head.weight.dtype
        state_values = self.head(hidden.to(head_dtype)).squeeze(-1)  # (B, T): V after reading token t
        return torch.cat([torch.zeros_like(state_values[:, :1]), state_values[:, :-1]], dim=1)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The head, and with ``train_backbone`` the backbone's parameters that reach the values: its output head
        (logits) does not, unless tied to the input embeddings, so it has no gradient and no optimizer state."""
        params = list(self.head.parameters())
        if not self.train_backbone:
            return params
        output = self.backbone.get_output_embeddings()
        unused = set() if output is None else {id(p) for p in output.parameters()}
        unused -= {id(p) for p in self.backbone.get_input_embeddings().parameters()}
        return params + [p for p in self.backbone.parameters() if id(p) not in unused]


def build_critic(kind: str, policy: PreTrainedModel, separate: PreTrainedModel | None = None) -> Critic:
    """``kind="policy"``: a head on ``policy``'s backbone; ``kind="separate"``: a head on ``separate``."""
    if kind == "policy":
        return Critic(policy, train_backbone=False)
    if kind == "separate":
        if separate is None:
            raise ValueError("algo.critic=separate needs a critic model (e.g. a small AutoModelForCausalLM)")
        return Critic(separate, train_backbone=True)
    raise ValueError(f"unknown critic kind {kind!r}; choose 'policy' or 'separate'")


class CriticTrainer:
    """Owns the critic's optimiser; ``step`` takes one gradient step on the clipped value loss."""

    def __init__(self, critic: Critic, lr: float, value_clip: float | None) -> None:
        self.critic = critic
        self.value_clip = value_clip
        self.optimizer = torch.optim.AdamW(critic.trainable_parameters(), lr=lr)

    def step(
        self, input_ids: Tensor, attention_mask: Tensor, mask: Tensor, old_values: Tensor, returns: Tensor
    ) -> dict[str, float]:
        """One update on (B, T) tensors: ``mask`` marks completion tokens, ``old_values`` are the values the
        advantages were computed with, ``returns`` the GAE targets (``verity.algo.objective.critic_targets``)."""
        mask = mask.float()
        values = self.critic.values(input_ids, attention_mask)
        token_loss = clipped_value_loss(values, old_values, returns, self.value_clip)
        loss = aggregate(
            token_loss, mask, "token_mean", token_normalizer=max(mask.sum().item(), 1.0), seq_normalizer=1.0
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        error = (values.detach() - returns).abs()
        return {"critic/loss": loss.item(), "critic/abs_error": masked_mean(error, mask).item()}

    @torch.no_grad()
    def values(self, batch: Batch) -> Tensor:
        """The critic's values (B, T) of a rollout batch, before any update (the GAE inputs)."""
        device = self.critic.head.weight.device
        return self.critic.values(batch.input_ids.to(device), batch.attention_mask.to(device)).float().cpu()

    def fit(
        self, cfg: AlgoConfig, batch: Batch, rewards: Tensor, values: Tensor, kl_coef: float
    ) -> dict[str, float]:
        """One critic update towards the GAE returns of ``batch`` (same rewards and KL as the advantages)."""
        returns = batch_returns(cfg, batch, rewards, values, kl_coef)
        device = self.critic.head.weight.device
        return self.step(
            batch.input_ids.to(device),
            batch.attention_mask.to(device),
            batch.loss_mask.to(device),
            values.to(device),
            returns.to(device),
        )

    def state_dict(self) -> dict[str, object]:
        return {"critic": self.critic.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])


def batch_returns(cfg: AlgoConfig, batch: Batch, rewards: Tensor, values: Tensor, kl_coef: float) -> Tensor:
    """The GAE returns (B, T) a critic fits on ``batch``: the same rewards and KL as the advantages."""
    return critic_targets(
        cfg,
        rewards,
        batch.loss_mask,
        values,
        old_logprobs=batch.old_logprobs,
        ref_logprobs=batch.ref_logprobs,
        kl_coef=kl_coef,
    )
