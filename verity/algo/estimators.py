"""The built-in advantage estimators without settings or state of their own, registered by name
(``algo.advantage``). Each is a thin adapter from ``AdvantageInputs`` and the config's numbers to a pure function
of ``verity.algo.advantages``, whose docstring names the paper. Estimators with their own settings and state have
a module each (``verity.algo.pass_k``, ``verity.algo.single_rollout``)."""

from __future__ import annotations

import torch
from torch import Tensor

from verity.algo import advantages as fns
from verity.algo.contract import AdvantageInputs, AlgoConfig, advantage_estimator
from verity.algo.reduce import masked_whiten


@advantage_estimator("grpo", group_relative=True)
def grpo(x: AdvantageInputs, cfg: AlgoConfig) -> Tensor:
    return fns.group_relative_advantages(x.sequence_rewards, x.group_ids, True, cfg.adv_eps)


@advantage_estimator("dr_grpo", group_relative=True)
def dr_grpo(x: AdvantageInputs, cfg: AlgoConfig) -> Tensor:
    return fns.group_relative_advantages(x.sequence_rewards, x.group_ids, False, cfg.adv_eps)


@advantage_estimator("rloo", group_relative=True)
def rloo(x: AdvantageInputs, cfg: AlgoConfig) -> Tensor:
    return fns.rloo_advantages(x.sequence_rewards, x.group_ids)


@advantage_estimator("task_norm_grpo", needs=("tasks",), group_relative=True)
def task_norm_grpo(x: AdvantageInputs, cfg: AlgoConfig) -> Tensor:
    tasks = x.tasks
    if tasks is None or len(tasks) != x.rewards.shape[0]:
        raise ValueError("algo.advantage=task_norm_grpo needs tasks: one task name per reward")
    task_ids = torch.tensor([sorted(set(tasks)).index(t) for t in tasks])
    return fns.task_normalized_advantages(x.sequence_rewards, x.group_ids, task_ids, cfg.adv_eps)


@advantage_estimator("trloo", needs=("turns",), level="token", reads=("gamma",))
def trloo(x: AdvantageInputs, cfg: AlgoConfig) -> Tensor:
    if x.turns is None:
        raise ValueError(
            "algo.advantage=trloo needs turns=(turn_rewards (N,K), turn_mask (N,K), token_turns (N,T))"
        )
    turn_rewards, turn_mask, token_turns = x.turns
    # Shaping terms land on the last turn and a KL in the reward on the turn that paid it.
    turn_rewards = fns.turn_level_rewards(turn_rewards, turn_mask, x.rewards, token_turns, x.kl_penalty)
    per_turn = fns.trloo_advantages(turn_rewards, turn_mask, x.group_ids, cfg.gamma)
    return fns.turns_to_tokens(per_turn, token_turns).float()


@advantage_estimator("tree_grpo", needs=("turns",), level="token", group_relative=True, shaped=False)
def tree_grpo(x: AdvantageInputs, cfg: AlgoConfig) -> Tensor:
    if x.turns is None:
        raise ValueError(
            "algo.advantage=tree_grpo needs turns=(step_values (N,K), step_mask (N,K), token_steps (N,T))"
        )
    step_values, step_mask, token_steps = x.turns
    return fns.tree_advantages(step_values, step_mask, token_steps, x.group_ids)


@advantage_estimator("tree_q", needs=("turns",), level="token", shaped=False)
def tree_q(x: AdvantageInputs, cfg: AlgoConfig) -> Tensor:
    if x.turns is None:
        raise ValueError(
            "algo.advantage=tree_q needs turns=(step_values (N,K), step_mask (N,K), token_steps (N,T))"
        )
    step_values, step_mask, token_steps = x.turns
    return fns.tree_advantages(step_values, step_mask, token_steps, x.group_ids, subtract_mean=False)


@advantage_estimator("grpo_process", needs=("turns",), level="token", group_relative=True, shaped=False)
def grpo_process(x: AdvantageInputs, cfg: AlgoConfig) -> Tensor:
    if x.turns is None:
        raise ValueError("algo.advantage=grpo_process needs turns: the step scores of a process verifier")
    if x.kl_penalty is not None:
        raise ValueError("algo.advantage=grpo_process takes no KL in the reward; set algo.kl_in=loss")
    step_rewards, step_mask, token_steps = x.turns
    per_step = fns.process_group_advantages(step_rewards, step_mask, x.group_ids, cfg.adv_eps)
    return fns.turns_to_tokens(per_step, token_steps).float()


@advantage_estimator("reinforce_pp", level="token", reads=("gamma",))
def reinforce_pp(x: AdvantageInputs, cfg: AlgoConfig) -> Tensor:
    return fns.reinforce_pp_advantages(x.token_rewards, x.mask, cfg.gamma, cfg.adv_eps)


@advantage_estimator("reinforce_pp_baseline", level="token", group_relative=True, reads=("gamma",))
def reinforce_pp_baseline(x: AdvantageInputs, cfg: AlgoConfig) -> Tensor:
    rewards = x.rewards.float()
    baseline = rewards - fns.group_relative_advantages(rewards, x.group_ids, scale_by_std=False)  # group mean
    return fns.reinforce_pp_advantages(x.token_rewards, x.mask, cfg.gamma, cfg.adv_eps, baseline)


@advantage_estimator("gae", needs=("values",), level="token", reads=("gamma", "gae_lambda", "gae_whiten"))
def gae(x: AdvantageInputs, cfg: AlgoConfig) -> Tensor:
    if x.values is None:
        raise ValueError("algo.advantage=gae needs values (N, T) from the critic")
    adv, _ = fns.gae_advantages(x.token_rewards, x.values, x.mask, cfg.gamma, cfg.gae_lambda)
    return masked_whiten(adv, x.mask, cfg.adv_eps) if cfg.gae_whiten else adv
