"""Coefficient controllers of the loss: the adaptive KL coefficient and the adaptive entropy controller.

Each object takes numbers (a measured KL, an entropy) and keeps a little state that a checkpoint saves with
``state_dict()`` and restores with ``load_state_dict()``. An estimator's own state lives in its own module
(``verity.algo.pass_k``, ``verity.algo.single_rollout``).
"""

from __future__ import annotations

from typing import Any


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
