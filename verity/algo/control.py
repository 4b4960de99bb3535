"""Stateful pieces of the algorithm: coefficient controllers and the single-rollout baseline.

Each object takes numbers (a measured KL, an entropy, rewards) and keeps a little state that a checkpoint saves
with ``state_dict()`` and restores with ``load_state_dict()``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from verity.algo.advantages import result_dtype


class AdaptiveKLController:
    """Adaptive KL coefficient toward a target KL (Ziegler et al., arXiv:1909.08593, section 2.2):
    ``e = clip(kl / target - 1, -0.2, 0.2)``, ``beta <- beta (1 + e n / horizon)`` after a step over n samples.
    With ``target=None`` the coefficient stays fixed."""

    def __init__(self, coef: float, target: float | None = None, horizon: int = 10000) -> None:
        self.coef = coef
        self.target = target
        self.horizon = horizon

    def update(self, kl: float, n_samples: int) -> float:
        if self.target is not None:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.coef *= 1.0 + error * n_samples / self.horizon
        return self.coef

    def state_dict(self) -> dict[str, Any]:
        return {"coef": self.coef}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.coef = float(state["coef"])


class EntropyController:
    """Keeps policy entropy inside a target band [low, high] (the idea of QwenLong-L1.5's AEPO).

    ``mode="coef"``: below the band the entropy bonus grows by ``step`` (up to ``max_coef``), above it shrinks
    (down to 0); inside it is left alone. ``mode="mask"``: above the band, updates from negative-advantage tokens
    are dropped (``negative_weight = 0``), because pushing probability away from sampled tokens is what raises
    entropy; they come back once entropy falls below the band. Between the edges the last decision holds,
    which keeps the controller from flapping. Without a band (``low=None``) nothing changes.
    """

    def __init__(
        self,
        coef: float,
        low: float | None = None,
        high: float | None = None,
        step: float = 1e-3,
        max_coef: float = 0.05,
        mode: str = "coef",
    ) -> None:
        if mode not in ("coef", "mask"):
            raise ValueError(f"entropy controller mode must be 'coef' or 'mask', got {mode!r}")
        self.coef, self.low, self.high = coef, low, high
        self.step, self.max_coef, self.mode = step, max_coef, mode
        self.negative_weight = 1.0

    def update(self, entropy: float) -> None:
        if self.low is None or self.high is None:
            return
        if self.mode == "coef":
            if entropy < self.low:
                self.coef = min(self.coef + self.step, self.max_coef)
            elif entropy > self.high:
                self.coef = max(self.coef - self.step, 0.0)
        elif entropy > self.high:
            self.negative_weight = 0.0
        elif entropy < self.low:
            self.negative_weight = 1.0

    def state_dict(self) -> dict[str, Any]:
        return {"coef": self.coef, "negative_weight": self.negative_weight}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.coef = float(state["coef"])
        self.negative_weight = float(state["negative_weight"])


class RunningBaseline:
    """Group-free baseline for one rollout per prompt (MSSR-style single-rollout RL).

    Per key k (an item id or a task family) it keeps an exponential moving average of the key's mean reward in
    each batch, updated once per batch: ``b_k <- d b_k + (1 - d) mean(r_i : k_i = k)``. A key's first update
    starts from the global mean (from its own batch mean in the very first batch). The global mean ``m`` is the
    plain running mean of every reward seen so far; a key never seen before gets ``b_k = m`` (0 before any
    reward), so the first visit of a prompt is compared with the policy's overall success rate rather than with
    0. ``advantages`` uses the baselines from before the batch, then folds the batch in: no sample is its own
    baseline, and the order of the samples within a batch changes nothing.
    """

    def __init__(self, decay: float = 0.9) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"baseline decay (algo.baseline_decay) must be in [0, 1), got {decay}")
        self.decay = decay
        self.means: dict[str, float] = {}
        self.global_mean = 0.0
        self.count = 0

    def baseline(self, keys: Sequence[str]) -> Tensor:
        """``b_k`` per key (N,), float64; unseen keys get the global mean."""
        return torch.tensor([self.means.get(k, self.global_mean) for k in keys], dtype=torch.float64)

    def update(self, keys: Sequence[str], rewards: Tensor) -> None:
        """Fold one batch in: one EMA step per key with the key's batch-mean reward, and the running mean."""
        values = rewards.double().tolist()
        by_key: dict[str, list[float]] = {}
        for key, reward in zip(keys, values, strict=True):
            by_key.setdefault(key, []).append(reward)
        for key, batch in by_key.items():
            batch_mean = math.fsum(batch) / len(batch)  # fsum is exact, so the order of samples cannot matter
            prior = self.means.get(key, self.global_mean if self.count else batch_mean)
            self.means[key] = self.decay * prior + (1 - self.decay) * batch_mean
        if values:
            total = self.count + len(values)
            self.global_mean = (self.count * self.global_mean + math.fsum(values)) / total
            self.count = total

    def advantages(self, keys: Sequence[str], rewards: Tensor) -> Tensor:
        """``A_i = r_i - b_{k_i}`` (N,) with the baselines from before this batch, then fold the batch in."""
        if rewards.dim() != 1 or len(keys) != rewards.shape[0]:
            raise ValueError(f"got {len(keys)} baseline keys for rewards of shape {tuple(rewards.shape)}")
        adv = rewards.double() - self.baseline(keys).to(rewards.device)
        self.update(keys, rewards)
        return adv.to(result_dtype(rewards))

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "means": dict(self.means),
            "global_mean": self.global_mean,
            "count": self.count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.means = {str(k): float(v) for k, v in state["means"].items()}
        self.global_mean = float(state["global_mean"])
        self.count = int(state["count"])


class PassAtKGuard:
    """Raises the ``pass_k`` estimator's k when exploration starts to collapse.

    It watches the policy's pass@k on its own training groups (``watch``, e.g. ``pass@4``: the unbiased pass@k
    of each prompt's G samples, averaged over the batch's prompts), smoothed as ``s <- d s + (1 - d) x`` from the
    first step's value. Once ``s`` falls ``drop`` below the best smoothed value seen since the last change,
    k doubles (up to ``max_k``): the objective then credits a group for finding a correct answer at all rather
    than for agreeing on it, which stops sharpening the majority answer (Pass@k Training, arXiv:2508.10751).
    ``patience`` steps must pass after the start and after each raise, so the smoothed value has settled.
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

    def update(self, metrics: Mapping[str, float]) -> None:
        value = metrics.get(self.watch)
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

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.k = int(state["k"])
        self.smoothed = None if state["smoothed"] is None else float(state["smoothed"])
        self.best = float(state["best"])
        self.since_change = int(state["since_change"])
