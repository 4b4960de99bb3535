"""``AlgoState``: the algorithm's mutable state for one run, built from the config and saved in checkpoints.

The loop owns one instance. It passes ``state`` to ``compute_advantages`` (single-rollout baseline, KL in the
reward), spreads ``state.loss_kwargs()`` into ``policy_loss`` (controlled KL/entropy coefficients) and calls
``state.update(metrics, n_samples)`` after each optimiser step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from verity.algo.config import AlgoConfig
from verity.algo.control import AdaptiveKLController, EntropyController, RunningBaseline


class AlgoState:
    """KL controller, entropy controller and running baseline of one training run."""

    def __init__(self, cfg: AlgoConfig) -> None:
        self.kl = AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
        self.entropy = EntropyController(
            cfg.entropy_coef,
            cfg.entropy_target_low,
            cfg.entropy_target_high,
            cfg.entropy_coef_step,
            cfg.entropy_coef_max,
            cfg.entropy_control,
        )
        self.baseline = RunningBaseline(cfg.baseline_decay)

    def loss_kwargs(self) -> dict[str, float]:
        """Keyword arguments for ``policy_loss`` carrying the controlled coefficients."""
        return {
            "kl_coef": self.kl.coef,
            "entropy_coef": self.entropy.coef,
            "negative_adv_weight": self.entropy.negative_weight,
        }

    def update(self, metrics: Mapping[str, float], n_samples: int) -> dict[str, float]:
        """Feed one step's measured ``kl`` and ``entropy`` (either may be absent) to the controllers; returns the
        new coefficients as metrics."""
        if "kl" in metrics:
            self.kl.update(float(metrics["kl"]), n_samples)
        if "entropy" in metrics:
            self.entropy.update(float(metrics["entropy"]))
        return {
            "algo/kl_coef": self.kl.coef,
            "algo/entropy_coef": self.entropy.coef,
            "algo/negative_weight": self.entropy.negative_weight,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "kl": self.kl.state_dict(),
            "entropy": self.entropy.state_dict(),
            "baseline": self.baseline.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.kl.load_state_dict(state["kl"])
        self.entropy.load_state_dict(state["entropy"])
        self.baseline.load_state_dict(state["baseline"])
