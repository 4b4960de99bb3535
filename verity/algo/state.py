"""``AlgoState``: the algorithm's mutable state for one run, built from the config and saved in checkpoints.

The loop owns one instance. It passes ``state`` to ``compute_advantages`` (the estimator's own state, the KL
coefficient when the KL sits in the reward), spreads ``state.loss_kwargs()`` into ``policy_loss`` (controlled
KL/entropy coefficients), calls ``state.update(metrics, n_samples)`` after each step and reports
``state.take_warnings()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from verity.algo.config import AlgoConfig
from verity.algo.contract import EstimatorState, RunConfig
from verity.algo.control import AdaptiveKLController, EntropyController
from verity.algo.registry import resolve_estimator


class AlgoState:
    """KL controller, entropy controller and the configured estimator's own state (``estimator``: None when it
    keeps none) of one training run. ``run`` is the run's config, from which an estimator's state may read the
    rest of the run (the group size, the evaluation's k)."""

    def __init__(self, cfg: AlgoConfig, run: RunConfig = None) -> None:
        self.kl = AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
        self.entropy = EntropyController(
            cfg.entropy_coef,
            cfg.entropy_target_low,
            cfg.entropy_target_high,
            cfg.entropy_coef_step,
            cfg.entropy_coef_max,
            cfg.entropy_control,
        )
        factory = resolve_estimator(cfg.advantage).state
        self.estimator: EstimatorState | None = (
            factory(cfg.estimator_settings, run) if factory is not None else None
        )
        self.steps = 0  # steps folded in so far (the step number the estimator's reactions cite)
        self._warnings: list[str] = []

    def loss_kwargs(self) -> dict[str, float]:
        """Keyword arguments for ``policy_loss`` carrying the controlled coefficients."""
        return {
            "kl_coef": self.kl.coef,
            "entropy_coef": self.entropy.coef,
            "negative_adv_weight": self.entropy.negative_weight,
        }

    def update(self, metrics: Mapping[str, float], n_samples: int) -> dict[str, float]:
        """Feed one step's measured ``kl`` and ``entropy`` (either may be absent) to the controllers and its
        metrics to the estimator's state; returns the new coefficients and the estimator's own metrics."""
        self.steps += 1
        if "kl" in metrics:
            self.kl.update(float(metrics["kl"]), n_samples)
        if "entropy" in metrics:
            self.entropy.update(float(metrics["entropy"]))
        out = {
            "algo/kl_coef": self.kl.coef,
            "algo/entropy_coef": self.entropy.coef,
            "algo/negative_weight": self.entropy.negative_weight,
        }
        if self.estimator is not None:
            own, warnings = self.estimator.update(self.steps, metrics)
            out.update(own)
            self._warnings += warnings
        return out

    def take_warnings(self) -> list[str]:
        """What the estimator's state reported since the last call (e.g. the pass@k guard raising k)."""
        warnings, self._warnings = self._warnings, []
        return warnings

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "kl": self.kl.state_dict(),
            "entropy": self.entropy.state_dict(),
            "estimator": self.estimator.state_dict() if self.estimator is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.steps = int(state.get("steps", 0))
        self.kl.load_state_dict(state["kl"])
        self.entropy.load_state_dict(state["entropy"])
        if self.estimator is not None and state.get("estimator") is not None:
            self.estimator.load_state_dict(state["estimator"])
