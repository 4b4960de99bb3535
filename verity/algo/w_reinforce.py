"""W-REINFORCE as published (Zhu et al., "The Surprising Effectiveness of Negative Reinforcement in LLM
Reasoning", arXiv:2506.01347), registered as ``algo.advantage: w_reinforce``.

The paper splits REINFORCE with rewards +1 / -1 into positive and negative sample reinforcement and weights the
positive part by lambda: ``L = lambda * PSR + NSR``. As advantages: a correct sample gets ``+lambda``, a wrong one
``-1``, with no baseline, so a group that is all wrong still pushes every sample down. This is not
``algo.positive_scale``, which multiplies another estimator's positive advantages (GRPO's baseline and std stay).

Settings (keys of the ``algo:`` section, read only under ``algo.advantage: w_reinforce``): ``w_reinforce_lambda``.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from verity.algo.advantages import binary
from verity.algo.contract import AdvantageInputs, AlgoConfig, RunConfig, advantage_estimator


class WReinforceSettings(BaseModel):
    """The w_reinforce estimator's keys in the ``algo:`` section."""

    model_config = ConfigDict(extra="forbid")

    w_reinforce_lambda: float = Field(
        0.1,
        ge=0,
        description="w_reinforce estimator: the advantage of a correct sample (a wrong one gets -1, no baseline); "
        "0.1 in the paper, 1 is REINFORCE with +-1 rewards, 0 keeps only negative sample reinforcement.",
    )


def w_reinforce_advantages(correct: Tensor, lam: float) -> Tensor:
    """W-REINFORCE (Zhu et al., arXiv:2506.01347): ``A_i = lambda`` for a correct sample, ``-1`` for a wrong one;
    no baseline and no normalisation. ``correct`` (N,) boolean or 0/1; the result has its dtype when it is a
    float tensor, else the default dtype. (N,)."""
    binary(correct, "W-REINFORCE advantages")
    dtype = correct.dtype if correct.is_floating_point() else torch.get_default_dtype()
    return torch.where(correct.bool(), torch.tensor(lam, dtype=dtype), torch.tensor(-1.0, dtype=dtype))


def check_run(settings: WReinforceSettings, run: RunConfig) -> list[str]:
    """No KL sits in the reward: W-REINFORCE credits correct answers, not a reward less a KL charge."""
    if run.algo.kl_in == "reward" and (run.algo.kl_coef > 0 or run.algo.kl_target is not None):
        return ["algo.advantage=w_reinforce credits correct answers, not a KL in the reward; set algo.kl_in=loss"]
    return []


@advantage_estimator("w_reinforce", settings=WReinforceSettings, check=check_run, reads=("correct_threshold",))
def w_reinforce(x: AdvantageInputs, cfg: AlgoConfig) -> Tensor:
    """Shaped rewards above ``algo.correct_threshold`` count as correct."""
    correct = (x.rewards > cfg.correct_threshold).to(x.rewards.dtype)
    return w_reinforce_advantages(correct, x.settings.w_reinforce_lambda)
