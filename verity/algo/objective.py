"""The algorithm as the loop and learner see it: three functions that read ``AlgoConfig`` and call the math.

- ``shape_rewards``: verifier rewards -> shaped rewards (N,).
- ``compute_advantages``: rewards -> token advantages (N, T) from the registered estimator (``advantage_inputs``
  says which optional inputs it declares); ``critic_targets`` gives GAE's value targets.
- ``policy_loss``: log-probs and advantages of one micro-batch -> scalar loss and float metrics, around the
  registered policy loss's per-token surrogate.

The learner stays algorithm-blind: it runs forwards, calls ``policy_loss`` and back-propagates.
``needs_proximal(cfg)`` tells it when to also record its own pre-update log-probs (``prox_logprobs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from verity.algo import advantages as adv_fns
from verity.algo.config import AlgoConfig
from verity.algo.contract import AdvantageInputs, LossInputs
from verity.algo.kl import kl_estimate
from verity.algo.losses import behaviour_weight, entropy_shaped_advantages
from verity.algo.reduce import aggregate, masked_mean
from verity.algo.registry import resolve_estimator, resolve_loss
from verity.algo.shaping import long2short_reward, repetition_penalty, soft_overlong_penalty
from verity.algo.state import AlgoState


def _check_same_shape(reference: str, ref: Tensor, **others: Tensor | None) -> None:
    for name, tensor in others.items():
        if tensor is not None and tensor.shape != ref.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)} but {reference} has {tuple(ref.shape)}")


def needs_proximal(cfg: AlgoConfig) -> bool:
    """True when ``policy_loss`` needs ``prox_logprobs``: the learner's own log-probs of the batch before this
    update (no grad), as opposed to the engine's behaviour log-probs. The loss declares it, or truncated
    importance sampling (``tis_cap``) asks for it."""
    return "prox_logprobs" in resolve_loss(cfg.loss).needs or cfg.tis_cap is not None


def shape_rewards(
    cfg: AlgoConfig,
    rewards: Tensor,
    lengths: Tensor,
    group_ids: Tensor,
    completion_ids: Sequence[Sequence[int]] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Add the configured shaping terms to verifier rewards (N,); returns shaped rewards and the mean of each term.

    ``lengths`` (N,) are completion lengths in tokens; ``completion_ids`` are needed by the repetition penalty.
    """
    _check_same_shape("rewards", rewards, lengths=lengths, group_ids=group_ids)
    shaped = rewards.float().clone()
    metrics: dict[str, float] = {}
    if cfg.overlong_max_len is not None:
        term = cfg.overlong_coef * soft_overlong_penalty(lengths, cfg.overlong_max_len, cfg.overlong_buffer)
        shaped += term
        metrics["shaping/overlong"] = term.mean().item()
    if cfg.long2short_coef > 0:
        correct = rewards > cfg.correct_threshold
        term = cfg.long2short_coef * long2short_reward(lengths, correct, group_ids)
        shaped += term
        metrics["shaping/long2short"] = term.mean().item()
    if cfg.repetition_coef > 0:
        if completion_ids is None or len(completion_ids) != rewards.shape[0]:
            raise ValueError("algo.repetition_coef > 0 needs completion_ids: one token list per reward")
        term = cfg.repetition_coef * repetition_penalty(completion_ids, cfg.repetition_ngram)
        shaped += term
        metrics["shaping/repetition"] = term.mean().item()
    return shaped, metrics


def _kl_penalty(cfg: AlgoConfig, kl_coef: float, old_logprobs: Tensor | None, ref_logprobs: Tensor | None):
    """Per-token KL penalty for ``kl_in == "reward"`` (N, T), or None when the KL is not in the reward."""
    if cfg.kl_in != "reward" or kl_coef == 0:
        return None
    if old_logprobs is None or ref_logprobs is None:
        raise ValueError("algo.kl_in=reward needs old_logprobs and ref_logprobs in compute_advantages")
    return kl_coef * kl_estimate(old_logprobs, ref_logprobs, cfg.kl_estimator).detach()


def advantage_inputs(cfg: AlgoConfig) -> frozenset[str]:
    """The optional inputs (``values``, ``turns``, ``tasks``, ``item_ids``) the configured estimator declares: the
    loop computes exactly these (and trains a critic when ``values`` is among them)."""
    return resolve_estimator(cfg.advantage).needs


def compute_advantages(
    cfg: AlgoConfig,
    rewards: Tensor,
    group_ids: Tensor,
    response_mask: Tensor,
    tasks: Sequence[str] | None = None,
    values: Tensor | None = None,
    *,
    item_ids: Sequence[str] | None = None,
    state: AlgoState | None = None,
    old_logprobs: Tensor | None = None,
    ref_logprobs: Tensor | None = None,
    turns: tuple[Tensor, Tensor, Tensor] | None = None,
    outcomes: Tensor | None = None,
) -> Tensor:
    """Token advantages (N, T) for ``rewards`` (N,) from the estimator ``cfg.advantage``, zero where
    ``response_mask`` is 0.

    ``values`` (N, T) are the critic's (``gae``); ``item_ids``/``tasks`` key per-sample baselines; ``state`` holds
    the running baseline and the controlled KL coefficient; ``old_logprobs``/``ref_logprobs`` (N, T) are needed
    when the KL sits in the reward; ``turns`` carries the multi-turn structure (``trloo``). ``outcomes`` (N,) are
    the verifier rewards before shaping, which rareness weighting compares (default: ``rewards``): a sample is rare
    for what it achieved, and shaping by length makes almost every reward unique.
    """
    if rewards.dim() != 1 or response_mask.dim() != 2 or response_mask.shape[0] != rewards.shape[0]:
        raise ValueError(
            f"expected rewards (N,) and response_mask (N, T); got {tuple(rewards.shape)} and "
            f"{tuple(response_mask.shape)}"
        )
    _check_same_shape("rewards", rewards, group_ids=group_ids, outcomes=outcomes)
    _check_same_shape("response_mask", response_mask, values=values, old_logprobs=old_logprobs)
    mask = response_mask.float()
    kl_coef = state.kl.coef if state is not None else cfg.kl_coef
    penalty = _kl_penalty(cfg, kl_coef, old_logprobs, ref_logprobs)
    inputs = AdvantageInputs(
        rewards=rewards,
        sequence_rewards=rewards.float() if penalty is None else rewards.float() - (penalty * mask).sum(-1),
        token_rewards=adv_fns.token_level_rewards(rewards, mask, penalty),
        group_ids=group_ids,
        mask=mask,
        kl_penalty=penalty,
        settings=cfg.estimator_settings,
        state=state.estimator if state is not None else None,
        values=values,
        turns=turns,
        tasks=tasks,
        item_ids=item_ids,
    )
    adv = resolve_estimator(cfg.advantage)(inputs, cfg).float()
    token_adv = adv_fns.broadcast_to_tokens(adv, mask) if adv.dim() == 1 else adv * mask
    if cfg.rareness_alpha > 0:
        compared = (rewards if outcomes is None else outcomes).float()
        token_adv = token_adv * adv_fns.rareness_weights(compared, group_ids, cfg.rareness_alpha)[:, None]
    if cfg.adv_outlier_sigma is not None:
        token_adv = adv_fns.filter_outliers(token_adv, cfg.adv_outlier_sigma, mask)
    if cfg.positive_scale != 1.0:
        token_adv = adv_fns.positive_scaled(token_adv, cfg.positive_scale)
    return token_adv * mask


def critic_targets(
    cfg: AlgoConfig,
    rewards: Tensor,
    response_mask: Tensor,
    values: Tensor,
    *,
    old_logprobs: Tensor | None = None,
    ref_logprobs: Tensor | None = None,
    kl_coef: float | None = None,
) -> Tensor:
    """GAE value targets ``A + V`` (N, T) for the critic's loss (``verity.algo.losses.clipped_value_loss``)."""
    _check_same_shape("response_mask", response_mask, values=values)
    mask = response_mask.float()
    penalty = _kl_penalty(cfg, cfg.kl_coef if kl_coef is None else kl_coef, old_logprobs, ref_logprobs)
    token_rewards = adv_fns.token_level_rewards(rewards, mask, penalty)
    _, returns = adv_fns.gae_advantages(token_rewards, values, mask, cfg.gamma, cfg.gae_lambda)
    return returns


def _masked_max(values: Tensor, mask: Tensor) -> float:
    live = values[mask.bool()]
    return live.max().item() if live.numel() else 0.0


def policy_loss(
    cfg: AlgoConfig,
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    token_normalizer: float,
    seq_normalizer: float,
    ref_logprobs: Tensor | None = None,
    entropy: Tensor | None = None,
    prox_logprobs: Tensor | None = None,
    kl_coef: float | None = None,
    entropy_coef: float | None = None,
    negative_adv_weight: float = 1.0,
) -> tuple[Tensor, dict[str, float]]:
    """Scalar loss of one micro-batch (call ``.backward()`` on it) and float metrics.

    All tensors are (B, T) with ``logprobs[:, t]`` the log-prob of token t; ``mask`` is 1 on trained completion
    tokens. ``old_logprobs`` are the behaviour policy's (the engine's); ``prox_logprobs`` the learner's own
    before this update (see ``needs_proximal``). ``token_normalizer``/``seq_normalizer`` count the masked tokens
    and the sequences of the whole mini-batch, so micro-batch losses sum to the mini-batch loss.
    ``kl_coef``/``entropy_coef``/``negative_adv_weight`` come from ``AlgoState.loss_kwargs()`` and override the
    config. Metrics: ``loss/*`` add up over micro-batches; the rest are means over this micro-batch's tokens.
    """
    _check_same_shape(
        "logprobs",
        logprobs,
        old_logprobs=old_logprobs,
        advantages=advantages,
        mask=mask,
        ref_logprobs=ref_logprobs,
        entropy=entropy,
        prox_logprobs=prox_logprobs,
    )
    if needs_proximal(cfg) and prox_logprobs is None:
        raise ValueError(f"algo.loss={cfg.loss} and algo.tis_cap need prox_logprobs (see needs_proximal)")
    kl_coef = cfg.kl_coef if kl_coef is None else kl_coef
    entropy_coef = cfg.entropy_coef if entropy_coef is None else entropy_coef
    mask = mask.float()
    anchor = old_logprobs if prox_logprobs is None else prox_logprobs
    adv = advantages.detach()
    if cfg.entropy_adv_alpha > 0:
        if entropy is None:
            raise ValueError("algo.entropy_adv_alpha > 0 needs the token entropy passed to policy_loss")
        adv = entropy_shaped_advantages(adv, entropy, cfg.entropy_adv_alpha, cfg.entropy_adv_kappa)
    if negative_adv_weight != 1.0:
        adv = torch.where(adv < 0, adv * negative_adv_weight, adv)
    surrogate = resolve_loss(cfg.loss)
    token_loss, clipped, log_ratio = surrogate(LossInputs(logprobs, old_logprobs, anchor, adv, mask), cfg)
    metrics: dict[str, float] = {}
    if prox_logprobs is not None:
        weight = behaviour_weight(prox_logprobs, old_logprobs, cfg.tis_cap)
        token_loss = token_loss * weight
        metrics["is_weight/mean"] = masked_mean(weight, mask).item()

    def reduce(values: Tensor) -> Tensor:
        return aggregate(
            values,
            mask,
            cfg.aggregation,
            token_normalizer=token_normalizer,
            seq_normalizer=seq_normalizer,
            constant_normalizer=cfg.constant_normalizer,
        )

    pg_loss = reduce(token_loss)
    loss = pg_loss
    ratio = torch.exp(log_ratio.detach())
    behaviour_gap = (old_logprobs - logprobs).detach()
    metrics |= {
        "loss/policy": pg_loss.item(),
        "clip_frac": masked_mean(clipped, mask).item(),
        "ratio/mean": masked_mean(ratio, mask).item(),
        "ratio/max": _masked_max(ratio, mask),
        "mismatch/logprob_diff": masked_mean(behaviour_gap, mask).item(),
        "mismatch/logprob_diff_max": _masked_max(behaviour_gap.abs(), mask),
        "mismatch/k3": masked_mean(kl_estimate(old_logprobs, logprobs.detach(), "k3"), mask).item(),
    }
    if ref_logprobs is not None:
        kl_tokens = kl_estimate(logprobs, ref_logprobs, cfg.kl_estimator)
        metrics["kl"] = masked_mean(kl_tokens.detach(), mask).item()
        if cfg.kl_in == "loss" and kl_coef > 0:
            kl_loss = kl_coef * reduce(kl_tokens)
            loss = loss + kl_loss
            metrics["loss/kl"] = kl_loss.item()
    if entropy is not None:
        metrics["entropy"] = masked_mean(entropy.detach(), mask).item()
        if entropy_coef > 0:
            entropy_loss = -entropy_coef * reduce(entropy)
            loss = loss + entropy_loss
            metrics["loss/entropy"] = entropy_loss.item()
    metrics["loss/total"] = loss.item()
    return loss, metrics


@dataclass(frozen=True)
class PolicyObjective:
    """``policy_loss`` bound to a run's algorithm settings: what the learner calls, so that it never reads them."""

    cfg: AlgoConfig

    def __call__(
        self, logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, **kwargs: Any
    ) -> tuple[Tensor, dict[str, float]]:
        return policy_loss(self.cfg, logprobs, old_logprobs, advantages, mask, **kwargs)

    def reads_every_row(self, entropy_coef: float | None = None) -> bool:
        """True when a term besides the advantage-weighted surrogate reads rows whose advantages are all 0: an
        entropy bonus (``entropy_coef``, the controlled value when given) or the entropy controller's measurement.
        (A KL term reads every row too; the learner sees that from the batch's reference log-probs.)"""
        coef = self.cfg.entropy_coef if entropy_coef is None else entropy_coef
        return coef > 0 or self.cfg.entropy_target_low is not None
