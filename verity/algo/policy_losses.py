"""The built-in policy losses, registered by name (``algo.loss``): the per-token surrogate of each; the shared
parts (importance weights, aggregation, KL and entropy terms) are in ``verity.algo.objective.policy_loss``."""

from __future__ import annotations

from torch import Tensor

from verity.algo.contract import AlgoConfig, LossInputs, policy_loss_fn
from verity.algo.losses import clipped_surrogate, gspo_log_ratio, safe_log_ratio


@policy_loss_fn("ppo_clip")
def ppo_clip(x: LossInputs, cfg: AlgoConfig) -> tuple[Tensor, Tensor, Tensor]:
    """PPO's clipped surrogate on the token ratio (with clip-higher and dual-clip from the config)."""
    log_ratio = safe_log_ratio(x.logprobs, x.anchor, cfg.log_ratio_clamp)
    return (*clipped_surrogate(log_ratio, x.advantages, cfg.clip_low, cfg.clip_high, cfg.dual_clip), log_ratio)


@policy_loss_fn("decoupled_ppo", needs=("prox_logprobs",))
def decoupled_ppo(x: LossInputs, cfg: AlgoConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Decoupled PPO (AReaL): the clip is around the proximal policy (the anchor is the learner's own pre-update
    log-probs) and the behaviour importance weight multiplies the loss (applied by ``policy_loss``)."""
    return ppo_clip(x, cfg)


@policy_loss_fn("gspo", needs=("sequence_advantage",), aggregation="seq_mean_token_mean")
def gspo(x: LossInputs, cfg: AlgoConfig) -> tuple[Tensor, Tensor, Tensor]:
    """GSPO (Zheng et al. 2025): one ratio per sequence, the geometric mean of its token ratios, clipped like
    PPO's; the objective averages sequences, ``(1/G) sum_i``, hence its aggregation."""
    log_ratio = gspo_log_ratio(x.logprobs, x.anchor, x.mask, cfg.log_ratio_clamp)
    return (*clipped_surrogate(log_ratio, x.advantages, cfg.clip_low, cfg.clip_high, cfg.dual_clip), log_ratio)
