"""``AlgoState``: the algorithm's mutable state for one run, built from the config and saved in checkpoints.

The loop owns one instance. It passes ``state`` to ``compute_advantages`` (single-rollout baseline, KL in the
reward), spreads ``state.loss_kwargs()`` into ``policy_loss`` (controlled KL/entropy coefficients) and calls
``state.update(metrics, n_samples)`` after each optimiser step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from verity.algo.config import AlgoConfig
from verity.algo.control import AdaptiveKLController, EntropyController, PassAtKGuard, RunningBaseline


class AlgoState:
    """KL controller, entropy controller, running baseline and pass@k guard of one training run.

    ``group_size`` bounds the k the guard may reach; ``watch_k`` names the training pass@k it watches (the
    loop's ``pass@{watch_k}`` metric)."""

    def __init__(self, cfg: AlgoConfig, group_size: int | None = None, watch_k: int = 4) -> None:
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
        self.tracks_k = cfg.advantage == "pass_k"
        self.pass_k = PassAtKGuard(
            cfg.pass_k, max(group_size or cfg.pass_k, cfg.pass_k), f"pass@{watch_k}", cfg.pass_k_guard
        )

    def loss_kwargs(self) -> dict[str, float]:
        """Keyword arguments for ``policy_loss`` carrying the controlled coefficients."""
        return {
            "kl_coef": self.kl.coef,
            "entropy_coef": self.entropy.coef,
            "negative_adv_weight": self.entropy.negative_weight,
        }

    def update(self, metrics: Mapping[str, float], n_samples: int) -> dict[str, float]:
        """Feed one step's measured ``kl``, ``entropy`` and training pass@k (any may be absent) to the
        controllers; returns the new coefficients (and the pass_k estimator's k) as metrics."""
        if "kl" in metrics:
            self.kl.update(float(metrics["kl"]), n_samples)
        if "entropy" in metrics:
            self.entropy.update(float(metrics["entropy"]))
        self.pass_k.update(metrics)
        out = {
            "algo/kl_coef": self.kl.coef,
            "algo/entropy_coef": self.entropy.coef,
            "algo/negative_weight": self.entropy.negative_weight,
        }
        if self.tracks_k:
            out["algo/pass_k"] = float(self.pass_k.k)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "kl": self.kl.state_dict(),
            "entropy": self.entropy.state_dict(),
            "baseline": self.baseline.state_dict(),
            "pass_k": self.pass_k.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.kl.load_state_dict(state["kl"])
        self.entropy.load_state_dict(state["entropy"])
        self.baseline.load_state_dict(state["baseline"])
        if "pass_k" in state:  # checkpoints from before the guard
            self.pass_k.load_state_dict(state["pass_k"])
