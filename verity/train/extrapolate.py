"""Extrapolation of the adapters' low-rank trajectory (NExt: Chen et al. 2026, "Low-rank Optimization Trajectories
Modeling for LLM RLVR Acceleration", arXiv 2604.11446).

NExt observes that under LoRA the parameter updates of RLVR concentrate in a rank-1 subspace that moves along a
curved (not straight) path, and skips training steps by predicting where that path goes. Our in-loop reading, per
adapted module (its ``lora_A`` and ``lora_B`` flattened into one vector ``theta``):

1. record ``theta`` after each RL step; over a window of ``H`` recorded steps ``t_0 < ... < t_{H-1}`` stack the
   differences ``D[i] = theta_{t_i} - theta_{t_0}``  (H, P);
2. the best rank-1 fit of ``D`` (Eckart-Young: the top singular pair) gives a unit direction ``u`` (P,) and the
   per-step coefficients ``c_i = D[i] . u``, so ``D ~= c u^T``;
3. fit a polynomial of degree ``d`` to ``(t_i, c_i)`` by least squares (the nonlinear predictor; degree 1 is the
   linear extrapolation of earlier work);
4. move along ``u`` by the predicted progress over the next ``k`` steps:
   ``theta <- theta_{t_{H-1}} + (c_hat(t_{H-1} + k) - c_hat(t_{H-1})) u``.

Departures from the paper (ours, documented in docs/extrapolation.md): the paper takes the rank-1 SVD of each
merged weight delta ``W_t - W_0`` (a spatial rank 1), trains a small MLP offline on many saved checkpoints to map
(global delta, local delta) to the delta 50 steps on, then adds a scaled prediction once; we take the rank 1 over
time of the adapter parameters inside a short window, predict with a low-order polynomial (robust with a handful of
points, nothing to train) and jump repeatedly during training. Step 4 keeps what the last point learned off the
direction and moves only by the fitted increment, so noise in the last coefficient does not move the jump.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from verity.train.config import ExtrapolateConfig


def rank1_trajectory(deltas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The dominant direction of a trajectory's differences ``deltas`` (H, P) (rows ``theta_{t_i} - theta_{t_0}``).

    Returns the unit direction ``u`` (P,), the coefficients ``c = deltas @ u`` (H,) (``c u^T`` is the best rank-1
    approximation of ``deltas``), and the share of the trajectory's squared norm that rank 1 explains,
    ``sigma_1^2 / sum_j sigma_j^2`` (1.0 for an exactly rank-1 path; 0.0 when nothing moved). The sign of ``u`` is
    chosen so that the latest coefficient is not negative."""
    deltas = deltas.double()
    _, s, vh = torch.linalg.svd(deltas, full_matrices=False)
    u = vh[0]  # (P,)
    c = deltas @ u  # (H,)
    if c[-1] < 0:
        u, c = -u, -c
    total = float((s * s).sum())
    share = float(s[0] * s[0]) / total if total > 0 else 0.0
    return u, c, share


def fit_polynomial(t: torch.Tensor, c: torch.Tensor, degree: int) -> torch.Tensor:
    """Least-squares coefficients ``a`` (degree + 1,) of ``c ~= sum_j a_j s^j`` with ``s = (t - t[0]) / (t[-1] -
    t[0])`` (times rescaled to [0, 1] so the Vandermonde system is well conditioned); needs more points than
    ``degree``."""
    if len(t) <= degree:
        raise ValueError(f"a degree-{degree} fit needs at least {degree + 1} points, got {len(t)}")
    s = scaled_time(t.double(), t)
    vander = torch.stack([s**j for j in range(degree + 1)], dim=-1)  # (H, degree + 1)
    return torch.linalg.lstsq(vander, c.double().unsqueeze(-1)).solution.squeeze(-1)


def scaled_time(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Times ``x`` on the scale ``fit_polynomial`` uses for window ``t``: 0 at its first step, 1 at its last."""
    t = t.double()
    return (x.double() - t[0]) / (t[-1] - t[0])


def polynomial_at(a: torch.Tensor, s: float) -> float:
    """``sum_j a_j s^j``."""
    return float(sum(a_j * s**j for j, a_j in enumerate(a.tolist())))


def extrapolation_step(
    t: torch.Tensor, deltas: torch.Tensor, horizon: float, degree: int
) -> tuple[torch.Tensor, float]:
    """The update (P,) that moves the trajectory's latest point ``horizon`` steps further along its fitted rank-1
    path: ``(c_hat(t[-1] + horizon) - c_hat(t[-1])) u``, with ``u`` and ``c`` from ``rank1_trajectory(deltas)``
    and ``c_hat`` the degree-``degree`` fit of ``(t, c)``. Also returns the rank-1 share.

    ``t`` (H,) are the recorded steps, ``deltas`` (H, P) the parameters at those steps minus those at ``t[0]``
    (so ``deltas[0]`` is 0)."""
    u, c, share = rank1_trajectory(deltas)
    t = t.to(c.device)  # the recorded steps live on the CPU, the adapters (on GPU runs) on the device
    a = fit_polynomial(t, c, degree)
    now = float(scaled_time(t[-1:], t))
    ahead = float(scaled_time(t[-1:] + horizon, t))
    return (polynomial_at(a, ahead) - polynomial_at(a, now)) * u, share


class Trajectory:
    """The recorded path of a model's trainable tensors and the jumps along it (``train.extrapolate``).

    Tensors are grouped per adapted module (``...q_proj.lora_A...`` and ``...q_proj.lora_B...`` form one group);
    a tensor outside any adapter is a group of its own. ``observe`` records the point after each learner step and,
    every ``every`` steps once ``history`` points are recorded, moves the parameters in place and starts a new
    window at the moved point (a window never spans a jump)."""

    def __init__(self, model: nn.Module, cfg: ExtrapolateConfig) -> None:
        self.cfg = cfg
        self.params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.groups: dict[str, list[str]] = {}
        for name in self.params:
            self.groups.setdefault(module_key(name), []).append(name)
        self.points: list[tuple[int, dict[str, torch.Tensor]]] = []
        self.last_jump = 0
        self.restart(0)

    def restart(self, step: int) -> None:
        """Start a new window at the current parameters, as of learner step ``step``."""
        self.last_jump = step
        self.points = []
        self.record(step)

    def record(self, step: int) -> None:
        point = {name: p.detach().clone() for name, p in self.params.items()}
        self.points = [*self.points, (step, point)][-self.cfg.history :]

    @torch.no_grad()
    def observe(self, step: int) -> dict[str, float] | None:
        """Record the point after learner step ``step``; when a jump is due, make it and return its metrics
        (``extrapolate/rank1_share``: mean over modules; ``extrapolate/jump_norm``: norm of the whole move)."""
        self.record(step)
        if len(self.points) < self.cfg.history or step - self.last_jump < self.cfg.every:
            return None
        t = torch.tensor([float(s) for s, _ in self.points])  # (H,)
        shares, squared = [], 0.0
        for names in self.groups.values():
            deltas = torch.stack([flat(point, names) - flat(self.points[0][1], names) for _, point in self.points])
            move, share = extrapolation_step(t, deltas, self.cfg.horizon, self.cfg.degree)
            shares.append(share)
            squared += float((move * move).sum())
            offset = 0
            for name in names:
                p = self.params[name]
                p.add_(move[offset : offset + p.numel()].view_as(p).to(p.dtype))
                offset += p.numel()
        self.restart(step)
        return {"extrapolate/rank1_share": sum(shares) / len(shares), "extrapolate/jump_norm": squared**0.5}

    def state_dict(self) -> dict[str, Any]:
        return {"points": self.points, "last_jump": self.last_jump}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state["points"][0][1]) != set(self.params):
            raise ValueError("the checkpoint's recorded trajectory does not fit this model's trainable tensors")
        device = next(iter(self.params.values())).device
        self.points = [(s, {k: v.to(device) for k, v in point.items()}) for s, point in state["points"]]
        self.last_jump = state["last_jump"]


def module_key(name: str) -> str:
    """The adapted module a trainable tensor belongs to: the name before ``.lora_`` (the name itself otherwise)."""
    return name.split(".lora_", 1)[0]


def flat(point: dict[str, torch.Tensor], names: Iterable[str]) -> torch.Tensor:
    """The tensors ``names`` of ``point`` as one float64 vector, in order."""
    return torch.cat([point[name].reshape(-1).double() for name in names])
