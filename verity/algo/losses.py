"""Policy-loss building blocks of the PPO family, token-wise over (B, T) tensors.

All functions return per-token terms; ``verity.algo.reduce.aggregate`` turns them into one scalar.
"""

from __future__ import annotations

import torch
from torch import Tensor

from verity.algo.reduce import masked_mean


def safe_log_ratio(logprobs: Tensor, base_logprobs: Tensor, clamp: float | None) -> Tensor:
    """``log pi_theta - log pi_base``, clamped to [-clamp, clamp] before anyone exponentiates it.

    StableReinforce (R1-Reward, arXiv:2505.02835) bounds the ratio in log space so that a token whose
    log-probability moved far cannot produce ``inf`` and poison the whole batch. ``None`` leaves it unclamped.
    """
    log_ratio = logprobs - base_logprobs
    return log_ratio if clamp is None else log_ratio.clamp(-clamp, clamp)


def gspo_log_ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor, clamp: float | None = None) -> Tensor:
    """Sequence-level log-ratio of GSPO (arXiv:2507.18071), in its token form (GSPO-token).

    ``log s_i = (1/|y_i|) sum_t (log pi(y_it) - log pi_old(y_it))`` is the log of the length-normalised
    sequence ratio. Each token receives ``sg[log s_i] + log pi(y_it) - sg[log pi(y_it)]``: its value is
    ``log s_i`` for every token of the sequence, while its gradient flows through its own token, so with
    sequence-level advantages this equals GSPO's sequence objective. (B, T); masked positions hold ``log s_i``.
    """
    token_log_ratio = logprobs - old_logprobs
    seq_log_ratio = masked_mean(token_log_ratio, mask, dim=-1).unsqueeze(-1)  # (B, 1)
    if clamp is not None:
        seq_log_ratio = seq_log_ratio.clamp(-clamp, clamp)
    return seq_log_ratio.detach() + logprobs - logprobs.detach()


def clipped_surrogate(
    log_ratio: Tensor,
    advantages: Tensor,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None = None,
) -> tuple[Tensor, Tensor]:
    """PPO clipped surrogate loss per token and where the clip was active, both (B, T).

    ``l = -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)`` (PPO, arXiv:1707.06347), with separate low/high
    epsilons (DAPO clip-higher, arXiv:2503.14476). With ``dual_clip = c > 1``, tokens with ``A < 0`` also get
    ``l = min(l, -c A)`` (dual-clip PPO, arXiv:1912.09729, as RIFT uses it): a huge ratio on a bad token can no
    longer produce an unbounded loss. Returns ``(loss, clipped)`` where ``clipped`` is 1 where a clip bound
    decided the value (and so the gradient is zero).
    """
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped_value = -advantages * ratio.clamp(1 - clip_low, 1 + clip_high)
    loss = torch.maximum(unclipped, clipped_value)
    clipped = clipped_value > unclipped
    if dual_clip is not None:
        bound = -dual_clip * advantages
        dual_active = (advantages < 0) & (loss > bound)
        loss = torch.where(dual_active, bound, loss)
        clipped = clipped | dual_active
    return loss, clipped.to(loss.dtype)


def behaviour_weight(prox_logprobs: Tensor, behaviour_logprobs: Tensor, cap: float | None) -> Tensor:
    """Detached importance weight ``pi_prox / pi_behaviour`` per token, truncated at ``cap``.

    Decoupled PPO (AReaL, arXiv:2505.24298) multiplies the clipped surrogate around the proximal policy by this
    weight so stale samples from an older behaviour policy stay unbiased. Truncated importance sampling (TIS;
    Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training") caps it, trading a
    little bias for bounded variance when the rollout engine's numerics differ from the trainer's. The weight
    never exceeds ``cap``.
    """
    weight = torch.exp((prox_logprobs - behaviour_logprobs).clamp(max=80.0)).detach()
    return weight if cap is None else weight.clamp(max=cap)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy ``H = -sum_v p_v log p_v`` of each position's next-token distribution: (B, T, V) -> (B, T)."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def entropy_shaped_advantages(advantages: Tensor, entropy: Tensor, alpha: float, kappa: float) -> Tensor:
    """Entropy-based advantage shaping: ``A' = A + min(alpha * sg[H_t], |A| / kappa)``.

    The bonus rewards exploratory (high-entropy) tokens but is capped by a fraction of ``|A|`` (Cheng et al.,
    arXiv:2506.14758, with ``kappa > 1``; MSSR uses it to keep single-rollout training from collapsing). For
    ``A < 0`` the cap gives ``A' <= A (1 - 1/kappa) < 0``, so the sign never flips; ``kappa <= 1`` or a negative
    ``alpha`` would break that, and both raise. (B, T).
    """
    if kappa <= 1:
        raise ValueError(
            f"entropy advantage shaping needs kappa > 1 (algo.entropy_adv_kappa), got {kappa}: with kappa <= 1 "
            "the bonus |A| / kappa can turn a negative advantage positive; set it above 1 (the default is 2)"
        )
    if alpha < 0:
        raise ValueError(f"entropy advantage shaping needs alpha >= 0 (algo.entropy_adv_alpha), got {alpha}")
    bonus = torch.minimum(alpha * entropy.detach(), advantages.abs() / kappa)
    return advantages + bonus


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, clip: float | None) -> Tensor:
    """PPO's clipped value loss per token (B, T): ``0.5 max((V - R)^2, (V_clip - R)^2)`` with
    ``V_clip = V_old + clip(V - V_old, -eps, eps)`` (arXiv:1707.06347; the clip keeps one critic update from
    moving a value further than ``eps`` from where the rollout saw it). ``clip=None`` gives ``0.5 (V - R)^2``."""
    returns = returns.detach()
    plain = (values - returns) ** 2
    if clip is None:
        return 0.5 * plain
    old_values = old_values.detach()
    clipped = (old_values + (values - old_values).clamp(-clip, clip) - returns) ** 2
    return 0.5 * torch.maximum(plain, clipped)
