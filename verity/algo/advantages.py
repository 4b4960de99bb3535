"""Advantage estimators: rewards (and values) in, advantages out.

Sequence-level estimators map rewards (N,) to advantages (N,), which ``broadcast_to_tokens`` spreads over each
completion; token-level ones (REINFORCE++, GAE) work on (N, T) token rewards. ``group_ids`` (N,) says which
samples answer the same prompt. A group with a single sample has no baseline to compare with, so group-based
estimators give it advantage 0 rather than a spurious signal. Integer or bool rewards give advantages in torch's
default float dtype (see ``result_dtype``), never truncated back to integers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from verity.algo.reduce import masked_whiten


def result_dtype(values: Tensor) -> torch.dtype:
    """The dtype of a result computed from ``values``: their own floating dtype, or torch's default float dtype
    when they are integer or bool (casting back to those would truncate a fractional advantage or weight)."""
    return values.dtype if values.is_floating_point() else torch.get_default_dtype()


def group_index(group_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Dense group index per sample (N,) and the size of each group (G,)."""
    if group_ids.dim() != 1:
        raise ValueError(f"group_ids must be 1-D (N,), got shape {tuple(group_ids.shape)}")
    _, index = torch.unique(group_ids, return_inverse=True)
    sizes = torch.bincount(index).to(torch.float64)
    return index, sizes


def _group_mean_std(values: Tensor, index: Tensor, sizes: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample group mean and unbiased group std (N,), computed in float64."""
    x = values.to(torch.float64)
    sums = torch.zeros_like(sizes).index_add_(0, index, x)
    mean = (sums / sizes)[index]
    squares = torch.zeros_like(sizes).index_add_(0, index, (x - mean) ** 2)
    std = (squares / (sizes - 1).clamp(min=1)).sqrt()[index]
    return mean, std


def group_relative_advantages(
    rewards: Tensor, group_ids: Tensor, scale_by_std: bool = True, eps: float = 1e-6
) -> Tensor:
    """GRPO: ``A_i = (r_i - mean_g(r)) / (std_g(r) + eps)`` over the G samples of prompt g (DeepSeekMath,
    arXiv:2402.03300). ``scale_by_std=False`` is Dr. GRPO's ``A_i = r_i - mean_g(r)`` (arXiv:2503.20783), which
    stops the std from up-weighting prompts that are almost always solved or failed. (N,)."""
    index, sizes = group_index(group_ids)
    mean, std = _group_mean_std(rewards, index, sizes)
    centred = rewards.to(torch.float64) - mean
    adv = centred / (std + eps) if scale_by_std else centred
    return torch.where(sizes[index] > 1, adv, torch.zeros_like(adv)).to(result_dtype(rewards))


def rloo_advantages(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """RLOO: ``A_i = r_i - (1/(G-1)) sum_{j != i} r_j`` (Ahmadian et al., arXiv:2402.14740), computed as
    ``G/(G-1) (r_i - mean_g(r))``. The baseline excludes the sample itself, so the estimate is unbiased. (N,)."""
    index, sizes = group_index(group_ids)
    mean, _ = _group_mean_std(rewards, index, sizes)
    size = sizes[index]
    adv = size / (size - 1).clamp(min=1) * (rewards.to(torch.float64) - mean)
    return torch.where(size > 1, adv, torch.zeros_like(adv)).to(result_dtype(rewards))


def binary(correct: Tensor, what: str) -> None:
    """Refuse a correctness vector that is not 0/1: a fractional 0.7 would count as a miss where hits are summed
    and as a hit where it is tested for truth, so a group's count and its credit would disagree. Threshold the
    rewards first (``rewards > correct_threshold``)."""
    if not correct.dtype == torch.bool and not bool(((correct == 0) | (correct == 1)).all()):
        raise ValueError(f"{what} need correctness of 0 or 1 per sample; threshold fractional rewards first")


def positive_scaled(advantages: Tensor, scale: float) -> Tensor:
    """Positive advantages scaled by ``scale``, negative ones kept, so pushing down wrong answers dominates. The
    balance of positive and negative sample reinforcement of Zhu et al. (arXiv:2506.01347) applied to another
    estimator's advantages; their W-REINFORCE itself (``+lambda`` / ``-1``, no baseline) is
    ``verity.algo.w_reinforce``. ``scale = 1`` leaves the advantages unchanged. Any shape."""
    return torch.where(advantages > 0, advantages * scale, advantages)


def task_normalized_advantages(rewards: Tensor, group_ids: Tensor, task_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """Task-specific normalisation (QwenLong-L1.5): ``A_i = (r_i - mean_g(r)) / (std_k(r) +
    eps)`` where the std runs over all samples of task family k in the batch rather than over the group or the
    mixed batch, so a task with dense rewards does not set the scale of a task with sparse ones. (N,)."""
    centred = group_relative_advantages(rewards, group_ids, scale_by_std=False).to(torch.float64)
    task_index, task_sizes = group_index(task_ids)
    _, task_std = _group_mean_std(rewards, task_index, task_sizes)
    return (centred / (task_std + eps)).to(result_dtype(rewards))


def broadcast_to_tokens(advantages: Tensor, mask: Tensor) -> Tensor:
    """Spread sequence advantages (N,) over the response tokens: (N, T), zero where ``mask`` is 0. The result
    keeps the advantages' precision (a bool or half-precision mask does not round them)."""
    return advantages.to(result_dtype(advantages)).unsqueeze(-1) * mask


def token_level_rewards(rewards: Tensor, mask: Tensor, token_penalty: Tensor | None = None) -> Tensor:
    """(N, T) rewards: the sequence reward on each sequence's last response token, minus an optional per-token
    penalty (a KL term when the KL sits in the reward). Zero where ``mask`` is 0."""
    positions = torch.arange(mask.shape[-1], device=mask.device)
    last = (positions * mask.bool()).argmax(-1)  # (N,)
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    out[torch.arange(mask.shape[0], device=mask.device), last] = rewards.float()
    if token_penalty is not None:
        out = out - token_penalty.float()
    return out * mask


def discounted_returns(token_rewards: Tensor, mask: Tensor, gamma: float = 1.0) -> Tensor:
    """``G_t = sum_{k >= t, mask_k = 1} gamma^(#masked tokens between) r_k`` (N, T); masked positions (e.g. a
    tool's observation tokens) are skipped, not discounted over."""
    returns = torch.zeros_like(token_rewards, dtype=torch.float32)
    running = torch.zeros(token_rewards.shape[0], dtype=torch.float32, device=token_rewards.device)
    for t in reversed(range(token_rewards.shape[-1])):
        live = mask[:, t].bool()
        running = torch.where(live, token_rewards[:, t] + gamma * running, running)
        returns[:, t] = running
    return returns * mask


def reinforce_pp_advantages(
    token_rewards: Tensor, mask: Tensor, gamma: float = 1.0, eps: float = 1e-6, baseline: Tensor | None = None
) -> Tensor:
    """REINFORCE++ (arXiv:2501.03262): token returns ``G_t`` whitened over every response token of the batch
    (global normalisation instead of a per-prompt std). ``baseline`` (N,) subtracted from the returns first
    gives REINFORCE++ with a group baseline (pass each sample's group-mean reward). (N, T)."""
    returns = discounted_returns(token_rewards, mask, gamma)
    if baseline is not None:
        returns = (returns - baseline.unsqueeze(-1).float()) * mask
    return masked_whiten(returns, mask, eps)


def gae_advantages(
    token_rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al., arXiv:1506.02438): ``delta_t = r_t + gamma V_{t+1} -
    V_t``, ``A_t = delta_t + gamma lambda A_{t+1}``, with V = 0 after the last response token. Masked positions
    are skipped so that observation tokens inside a multi-turn episode do not break the recursion. Returns
    ``(advantages, returns = A + V)``, both (N, T) and detached."""
    values = values.detach().float()
    adv = torch.zeros_like(values)
    next_value = torch.zeros(values.shape[0], dtype=torch.float32, device=values.device)
    next_adv = torch.zeros_like(next_value)
    for t in reversed(range(values.shape[-1])):
        live = mask[:, t].bool()
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        current = delta + gamma * lam * next_adv
        next_adv = torch.where(live, current, next_adv)
        next_value = torch.where(live, values[:, t], next_value)
        adv[:, t] = next_adv
    adv = adv * mask
    return adv, (adv + values) * mask


def trloo_advantages(turn_rewards: Tensor, turn_mask: Tensor, group_ids: Tensor, gamma: float = 1.0) -> Tensor:
    """TRLOO, turn-level leave-one-out (Dr. Kernel / KernelGYM), over (N, K) turn rewards.

    Each turn k of episode i gets the return ``G_ik = sum_{k' >= k} gamma^(k'-k) r_ik'`` and the advantage
    ``A_ik = G_ik - mean_{j != i, j has turn k} G_jk`` over the other episodes of the same group that reached
    turn k. Leaving the episode out of its own baseline removes GRPO's self-inclusion bias (which shrinks the
    gradient by (G-1)/G, and worse for late turns that few episodes reach). A turn no other episode reached
    gets advantage 0. Returns (N, K), zero where ``turn_mask`` is 0.
    """
    returns = discounted_returns(turn_rewards, turn_mask, gamma).double()  # (N, K)
    index, _ = group_index(group_ids)
    live = turn_mask.double()
    groups = int(index.max()) + 1
    sums = torch.zeros(groups, returns.shape[1], dtype=torch.float64).index_add_(0, index, returns * live)
    counts = torch.zeros_like(sums).index_add_(0, index, live)
    others = counts[index] - live  # (N, K)
    baseline = (sums[index] - returns * live) / others.clamp(min=1)
    adv = torch.where(others > 0, returns - baseline, torch.zeros_like(returns)) * live
    return adv.to(result_dtype(turn_rewards))


def process_group_advantages(
    step_rewards: Tensor, step_mask: Tensor, group_ids: Tensor, eps: float = 1e-6
) -> Tensor:
    """Process-supervised GRPO (DeepSeekMath, arXiv:2402.03300, section 4.1.3), over (N, K) step rewards.

    Every step reward of every sample of group g is normalised by the mean and (unbiased) std of all step
    rewards in that group, ``r~_ik = (r_ik - mean_g(R)) / (std_g(R) + eps)``, and a token of step k gets the sum
    of the normalised rewards of its own and all later steps, ``A_ik = sum_{k' >= k} r~_ik'``. A group with a
    single step in all gives 0. Returns (N, K), zero where ``step_mask`` is 0 (``turns_to_tokens`` spreads it).
    """
    index, _ = group_index(group_ids)
    live = step_mask.bool()
    step_group = index.unsqueeze(-1).expand_as(step_rewards)[live]  # group of each live step
    values = step_rewards[live].to(torch.float64)
    step_index, step_counts = group_index(step_group)
    mean, std = _group_mean_std(values, step_index, step_counts)
    normalised = torch.where(step_counts[step_index] > 1, (values - mean) / (std + eps), torch.zeros_like(values))
    per_step = torch.zeros(step_rewards.shape, dtype=torch.float64, device=step_rewards.device)
    per_step[live] = normalised
    return discounted_returns(per_step, step_mask, 1.0).to(result_dtype(step_rewards))


def turn_level_rewards(
    turn_rewards: Tensor,
    turn_mask: Tensor,
    episode_rewards: Tensor,
    token_turns: Tensor,
    token_penalty: Tensor | None = None,
) -> Tensor:
    """(N, K) turn rewards that add up to each episode's reward as the objective sees it, for ``trloo``.

    The environment scores turns, but the episode reward (N,) the loop passes on may carry sequence-level
    terms (reward shaping) that no turn holds: the difference lands on the episode's last turn, as a sequence
    reward lands on the last token in ``token_level_rewards``. A per-token penalty (N, T) (a KL term when the KL
    sits in the reward) is charged to the turn whose tokens paid it (``token_turns`` (N, T), -1 outside any
    turn, as ``turns_to_tokens`` takes it). Zero where ``turn_mask`` is 0.
    """
    live = turn_mask.bool()
    positions = torch.arange(turn_mask.shape[-1], device=turn_mask.device)
    last = (positions * live).argmax(-1)  # (N,)
    out = (turn_rewards.float() * live).clone()
    missing = episode_rewards.float() - out.sum(-1)  # (N,)
    out[torch.arange(out.shape[0], device=out.device), last] += missing
    if token_penalty is not None:
        paid = torch.where(token_turns >= 0, token_penalty.float(), torch.zeros_like(token_penalty.float()))
        out = out - torch.zeros_like(out).scatter_add_(1, token_turns.clamp(min=0), paid)
    return out * live


def turns_to_tokens(turn_values: Tensor, token_turns: Tensor) -> Tensor:
    """Spread per-turn values (N, K) over tokens: ``token_turns`` (N, T) holds each token's turn index, or -1
    for tokens outside any trained turn (prompt, observations, padding), which get 0."""
    gathered = turn_values.gather(1, token_turns.clamp(min=0))
    return torch.where(token_turns >= 0, gathered, torch.zeros_like(gathered))


def tree_advantages(
    step_values: Tensor, step_mask: Tensor, token_steps: Tensor, group_ids: Tensor, subtract_mean: bool = True
) -> Tensor:
    """Tree-GRPO (DeepSearch, Wu et al. 2025, arXiv:2509.25454, Eq. 15): the tokens of step j of a path get
    ``A_j = q(s_j) - mu``, where ``q(s_j)`` is the step's value (the soft-clipped backed-up q of an interior step,
    the +-1 outcome of the terminal one) and ``mu`` the mean terminal value over the tree (its group): mean-only
    normalisation, no division by a std.

    ``step_values``/``step_mask`` (N, K) hold each row's step values in order (its last live step is its
    terminal) and ``token_steps`` (N, T) each token's step index (-1 outside any step), as ``turn_tensors``
    gives them. A path of one step valued by its outcome gets ``outcome - mu``: Dr. GRPO on +-1 rewards.
    ``subtract_mean=False`` gives ``A_j = q(s_j)``, the paper's fine-grained node advantages before normalisation
    (its Table 4, step iii), which keep the sign the backup gave each step. (N, T).
    """
    live = step_mask.bool()
    positions = torch.arange(step_mask.shape[-1], device=step_mask.device)
    last = (positions * live).argmax(-1)  # (N,)
    outcomes = step_values.float()[torch.arange(step_values.shape[0], device=step_values.device), last]  # (N,)
    index, sizes = group_index(group_ids)
    mean, _ = _group_mean_std(outcomes, index, sizes)
    if not subtract_mean:
        mean = torch.zeros_like(mean)
    per_step = (step_values.double() - mean.unsqueeze(-1)) * live
    return turns_to_tokens(per_step, token_steps).to(result_dtype(step_values))


def filter_outliers(advantages: Tensor, sigma: float, mask: Tensor | None = None) -> Tensor:
    """StableReinforce advantage filter (R1-Reward, arXiv:2505.02835): zero every advantage whose z-score over
    the batch (over the ``mask``-ed positions when given) exceeds ``sigma`` (the 3-sigma rule), so a few extreme
    samples cannot dominate a step. Any shape."""
    mask = torch.ones_like(advantages) if mask is None else mask
    z = masked_whiten(advantages, mask, eps=0.0)
    outlier = torch.nan_to_num(z, nan=0.0).abs() > sigma
    return torch.where(outlier, torch.zeros_like(advantages), advantages)


def rareness_weights(rewards: Tensor, group_ids: Tensor, alpha: float) -> Tensor:
    """Group-rareness weight per sample (N,): ``w_i ∝ (1 / p_i)^alpha`` with ``p_i`` the share of its group
    that got the same reward, normalised to mean 1 within the group.

    Our reading of CalibRL's distribution-aware weighting: the one success among many
    failures (or the one failure among successes) is the informative sample, so it moves the policy more;
    a group where all rewards agree keeps weight 1. ``alpha = 0`` gives all ones.
    """
    index, sizes = group_index(group_ids)
    same = (index.unsqueeze(0) == index.unsqueeze(1)) & (rewards.unsqueeze(0) == rewards.unsqueeze(1))
    share = same.double().sum(1) / sizes[index]
    raw = share.pow(-alpha)
    group_mean = torch.zeros_like(sizes).index_add_(0, index, raw) / sizes
    return (raw / group_mean[index]).to(result_dtype(rewards))
