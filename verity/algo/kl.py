"""Per-token estimators of KL(pi || pi_ref) from samples of pi (Schulman, "Approximating KL Divergence", 2020).

With ``log r = log pi_ref(y) - log pi(y)`` for a sampled token y:
k1 = -log r (unbiased, high variance, can be negative), k2 = (log r)^2 / 2 (biased, low variance),
k3 = r - 1 - log r (unbiased, always >= 0; GRPO's choice).
"""

from __future__ import annotations

import torch
from torch import Tensor

KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k3", clamp: float = 20.0) -> Tensor:
    """Token-wise KL estimate (B, T). ``clamp`` bounds log r before ``exp`` so a single far-off token cannot
    overflow k3."""
    log_r = (ref_logprobs - logprobs).clamp(-clamp, clamp)
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r**2
    if estimator == "k3":
        return torch.exp(log_r) - 1 - log_r
    raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {', '.join(KL_ESTIMATORS)}")
