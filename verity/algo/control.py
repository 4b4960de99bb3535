"""Stateful pieces of the algorithm: coefficient controllers and the single-rollout baseline.

Each object takes numbers (a measured KL, an entropy, rewards) and keeps a little state that a checkpoint saves
with ``state_dict()`` and restores with ``load_state_dict()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


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

    Keeps an exponential moving average of the reward per key (an item id or a task family):
    ``b_k <- d b_k + (1 - d) r``. A key never seen before falls back to the running mean over all rewards, so
    the first visit of a prompt is compared with the policy's overall success rate rather than with 0.
    ``advantages`` reads the baselines *before* this batch updates them, so no sample is its own baseline.
    """

    def __init__(self, decay: float = 0.9) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"baseline decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.means: dict[str, float] = {}
        self.global_mean: float | None = None

    def baseline(self, keys: Sequence[str]) -> Tensor:
        fallback = 0.0 if self.global_mean is None else self.global_mean
        return torch.tensor([self.means.get(k, fallback) for k in keys], dtype=torch.float32)

    def update(self, keys: Sequence[str], rewards: Tensor) -> None:
        for key, reward in zip(keys, rewards.tolist(), strict=True):
            prior = self.means.get(key, self.global_mean if self.global_mean is not None else reward)
            self.means[key] = self.decay * prior + (1 - self.decay) * reward
            prior_global = reward if self.global_mean is None else self.global_mean
            self.global_mean = self.decay * prior_global + (1 - self.decay) * reward

    def advantages(self, keys: Sequence[str], rewards: Tensor) -> Tensor:
        """``A_i = r_i - b_{k_i}`` (N,), then fold this batch into the baselines."""
        if len(keys) != rewards.shape[0]:
            raise ValueError(f"got {len(keys)} baseline keys for {rewards.shape[0]} rewards")
        adv = rewards.float() - self.baseline(keys)
        self.update(keys, rewards)
        return adv.to(rewards.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "means": dict(self.means), "global_mean": self.global_mean}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.means = {str(k): float(v) for k, v in state["means"].items()}
        self.global_mean = None if state["global_mean"] is None else float(state["global_mean"])
