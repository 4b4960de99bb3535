"""Pass@k training (Chen et al., arXiv:2508.10751) as one estimator module: its math, its settings, its checks
against the rest of a run, and its state (the pass@k guard), registered as ``algo.advantage: pass_k``.

Settings (keys of the ``algo:`` section, read only under ``algo.advantage: pass_k``): ``pass_k``, the k of the
pass@k it trains for, and ``pass_k_guard``, the fall of the training groups' pass@k that doubles k.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from verity.algo.advantages import binary, group_index
from verity.algo.contract import AdvantageInputs, AlgoConfig, RunConfig, advantage_estimator


class PassKSettings(BaseModel):
    """The pass_k estimator's keys in the ``algo:`` section."""

    model_config = ConfigDict(extra="forbid")

    pass_k: int = Field(
        4,
        ge=1,
        description="pass_k estimator: the k of the pass@k it trains for (below rollout.group_size). 1 is GRPO "
        "with the population std; larger k pushes a group's majority answer less and keeps other answers alive.",
    )
    pass_k_guard: float | None = Field(
        None,
        gt=0,
        le=1,
        description="pass_k estimator: when the policy's pass@k on its own training groups (k = eval.k, smoothed "
        "over about 20 steps) falls this far below its best, double algo.pass_k (up to rollout.group_size - 1). "
        "None keeps algo.pass_k fixed.",
    )


def pass_at_k_advantages(correct: Tensor, group_ids: Tensor, k: int, eps: float = 1e-6) -> Tensor:
    """Pass@k training (Chen et al., arXiv:2508.10751, analytic form): the advantages whose policy gradient is
    that of the group's pass@k, for binary ``correct`` (N,).

    A group of n samples with c correct has the unbiased pass@k ``R = 1 - C(n-c, k) / C(n, k)`` and reward
    std ``s = sqrt(R (1 - R))``. A correct sample completes every k-subset it is in:
    ``A_pos = (1 - R) / s``; a wrong one helps only the subsets whose other k-1 members hold a correct sample:
    ``A_neg = (1 - R - C(n-c-1, k-1) / C(n-1, k-1)) / s``. With k = 1 this is GRPO with the population std;
    the larger k, the less a group that already solves the prompt pushes its majority answer, and a group that
    solves it for certain (``n - c < k``) gives 0; with k = n every group does. Groups need at least k samples.

    The numerators are differences of nearly equal ratios (at n = 32, c = 16, k = 16 both are about 1e-9 below
    1), so they are formed exactly from the binomials before one rounding to float64; the result has
    ``correct``'s dtype when it is a float tensor, else the default dtype. (N,)."""
    if k < 1:
        raise ValueError(f"pass@k advantages need k >= 1, got {k}")
    binary(correct, "pass@k advantages")
    index, sizes = group_index(group_ids)
    hits = torch.zeros_like(sizes).index_add_(0, index, correct.to(torch.float64))
    adv = torch.zeros(correct.shape[0], dtype=torch.float64)
    hit = correct.bool()
    for g, (n, c) in enumerate(zip(sizes.long().tolist(), hits.long().tolist(), strict=True)):
        if n < k:
            raise ValueError(f"pass@k advantages with k={k} need groups of at least k samples; one has {n}")
        all_wrong = Fraction(math.comb(n - c, k), math.comb(n, k))  # 1 - R
        std = math.sqrt(float(all_wrong * (1 - all_wrong)))
        if std == 0.0:
            continue
        others_wrong = Fraction(math.comb(n - c - 1, k - 1), math.comb(n - 1, k - 1)) if c < n else Fraction(0)
        members = index == g
        adv[members & hit] = float(all_wrong) / (std + eps)  # Python floats: no float32 step on the way
        adv[members & ~hit] = float(all_wrong - others_wrong) / (std + eps)
    return adv.to(correct.dtype if correct.is_floating_point() else torch.get_default_dtype())


class PassAtKGuard:
    """Raises the ``pass_k`` estimator's k when the training groups' pass@k falls.

    It watches the policy's pass@k on its own training groups (``watch``, e.g. ``pass@4``: the unbiased pass@k
    of each prompt's G samples, averaged over the batch's prompts), smoothed as ``s <- d s + (1 - d) x`` from the
    first step's value. Once ``s`` falls ``drop`` below the best smoothed value seen since the last change,
    k doubles, up to ``max_k``. What a larger k does (``pass_at_k_advantages``): a group with c of n correct
    pushes its correct samples by ``C(n-c, k) / C(n, k) / s``, which falls faster with c the larger k is, so
    groups that already solve the prompt most of the time push their answer less than groups that rarely do,
    and wrong samples beside a correct one are penalised less. It also silences more groups: every group with
    more than n - k correct samples gets zero advantages, and at k = n every group does, so ``max_k`` must stay
    below the group size (``guard_of`` uses G - 1). ``patience`` steps must pass after the start and after each
    raise, so the smoothed value has settled.
    """

    def __init__(
        self, k: int, max_k: int, watch: str, drop: float | None, decay: float = 0.95, patience: int = 20
    ) -> None:
        if not 1 <= k <= max_k:
            raise ValueError(f"pass@k guard needs 1 <= k <= max_k, got k={k}, max_k={max_k}")
        self.k, self.max_k, self.watch, self.drop = k, max_k, watch, drop
        self.decay, self.patience = decay, patience
        self.smoothed: float | None = None
        self.best = -math.inf
        self.since_change = 0

    def update(self, step: int, metrics: Mapping[str, float]) -> tuple[dict[str, float], list[str]]:
        """Fold in one step's training pass@k; returns the k in force (``algo/pass_k``) and, when the guard raised
        it, a warning saying why."""
        before = self.k
        self._observe(metrics.get(self.watch))
        warnings = []
        if self.k != before:
            warnings.append(
                f"step {step}: training {self.watch} fell (now {metrics[self.watch]:.3f}): exploration is "
                f"collapsing, so the pass@k guard raised algo.pass_k from {before} to {self.k}"
            )
        return {"algo/pass_k": float(self.k)}, warnings

    def _observe(self, value: float | None) -> None:
        if self.drop is None or value is None or not math.isfinite(value):
            return
        x = float(value)
        self.smoothed = x if self.smoothed is None else self.decay * self.smoothed + (1 - self.decay) * x
        self.since_change += 1
        if self.since_change < self.patience:
            return
        self.best = max(self.best, self.smoothed)
        if self.smoothed < self.best - self.drop and self.k < self.max_k:
            self.k = min(2 * self.k, self.max_k)
            self.best, self.since_change = -math.inf, 0

    def state_dict(self) -> dict[str, Any]:
        return {"k": self.k, "smoothed": self.smoothed, "best": self.best, "since_change": self.since_change}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.k = int(state["k"])
        self.smoothed = None if state["smoothed"] is None else float(state["smoothed"])
        self.best = float(state["best"])
        self.since_change = int(state["since_change"])


def group_sizes(run: RunConfig) -> list[tuple[str, int]]:
    """Every group size the run can sample, with its key: the rollout's, each curriculum stage's and its hard
    pool's, and the smallest adaptive one."""
    sizes = [("rollout.group_size", run.rollout.group_size)]
    for i, stage in enumerate(run.data.stages):
        sizes += [(f"data.stages.{i}.group_size", stage.group_size)] if stage.group_size is not None else []
        hard = stage.hard_focus
        sizes += [(f"data.stages.{i}.hard_focus.group_size", hard.group_size)] if hard is not None else []
    if run.data.adaptive_group.enabled:
        sizes.append(("data.adaptive_group.min_size", run.data.adaptive_group.min_size))
    return sizes


def guard_of(settings: PassKSettings, run: RunConfig) -> PassAtKGuard:
    """The run's guard: it starts at ``algo.pass_k``, watches the training groups' ``pass@{eval.k}`` and may
    double k up to one below the smallest group size (at k = G no group has a nonzero advantage)."""
    max_k = min(size for _, size in group_sizes(run)) - 1
    return PassAtKGuard(settings.pass_k, max_k, f"pass@{run.eval.k}", settings.pass_k_guard)


def check_run(settings: PassKSettings, run: RunConfig) -> list[str]:
    """k is below every group size; the guard can watch the training pass@k; no KL sits in the reward (pass@k
    credits correct answers, not a reward less a KL charge)."""
    errors = []
    k = settings.pass_k
    for key, size in group_sizes(run):
        if k == size:
            errors.append(
                f"algo.pass_k={k} must be below {key}={size}: every k-subset of a group of {size} is the whole "
                f"group, so pass@{k} is the same for all its samples and every advantage is 0 (lower algo.pass_k "
                f"or raise {key})"
            )
        elif k > size:
            errors.append(
                f"algo.pass_k={k} needs more samples per prompt, but {key}={size}: lower algo.pass_k below it or "
                f"raise {key}"
            )
    group_size = run.rollout.group_size
    if settings.pass_k_guard is not None and not 1 < run.eval.k <= group_size:
        errors.append(
            f"algo.pass_k_guard watches the training groups' pass@k at k = eval.k, which must be above 1 and at "
            f"most rollout.group_size={group_size}; eval.k={run.eval.k}"
        )
    if run.algo.kl_in == "reward" and (run.algo.kl_coef > 0 or run.algo.kl_target is not None):
        errors.append("algo.advantage=pass_k credits correct answers, not a KL in the reward; set algo.kl_in=loss")
    return errors


def remedy(settings: PassKSettings) -> str:
    if settings.pass_k_guard is None:
        return f"a larger algo.pass_k (now {settings.pass_k}) or algo.pass_k_guard"
    return f"a larger algo.pass_k (starts at {settings.pass_k})"


@advantage_estimator(
    "pass_k",
    group_relative=True,
    explores=True,
    settings=PassKSettings,
    check=check_run,
    state=guard_of,
    remedy=remedy,
    reads=("correct_threshold",),
)
def pass_k(x: AdvantageInputs, cfg: AlgoConfig) -> Tensor:
    """Rewards above ``algo.correct_threshold`` count as correct; k is the guard's (``algo.pass_k`` unless the
    guard raised it)."""
    correct = (x.rewards > cfg.correct_threshold).to(x.rewards.dtype)
    k = x.settings.pass_k if x.state is None else x.state.k
    return pass_at_k_advantages(correct, x.group_ids, k, cfg.adv_eps)
