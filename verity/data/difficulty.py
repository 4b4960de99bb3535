"""Online difficulty: per-item and per-task pass-rate estimates, updated from scored rollouts."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from verity.data.config import DifficultyConfig


class PassRates:
    """Pass-rate estimates of items and tasks.

    Each observation of an item adds ``s`` successes in ``t`` rollouts to decayed counts,
    ``S <- decay * S + s`` and ``T <- decay * T + t``. A task's rate is an EMA of its batch pass rates,
    ``P <- m * P + (1 - m) * s/t`` (the first observation sets it). An item's estimate shrinks its counts towards
    its task's rate with ``k = prior_strength`` pseudo-trials: ``p = (S + k * P) / (T + k)``.
    """

    def __init__(self, cfg: DifficultyConfig) -> None:
        self.cfg = cfg
        self.items: OrderedDict[str, tuple[float, float]] = OrderedDict()  # id -> (S, T), least recent first
        self.tasks: dict[str, float] = {}

    def observe(self, item_id: str, task: str, successes: int, trials: int) -> None:
        if trials <= 0:
            return
        s, t = self.items.pop(item_id, (0.0, 0.0))
        self.items[item_id] = (self.cfg.decay * s + successes, self.cfg.decay * t + trials)
        while len(self.items) > self.cfg.max_items:
            self.items.popitem(last=False)
        rate = successes / trials
        m = self.cfg.task_momentum
        self.tasks[task] = rate if task not in self.tasks else m * self.tasks[task] + (1 - m) * rate

    def task_rate(self, task: str) -> float | None:
        return self.tasks.get(task)

    def trials(self, item_id: str) -> float:
        return self.items.get(item_id, (0.0, 0.0))[1]

    def item_rate(self, item_id: str, task: str) -> float | None:
        """The shrunk estimate of an item, or None when neither it nor its task has been seen."""
        prior = self.tasks.get(task)
        s, t = self.items.get(item_id, (0.0, 0.0))
        if prior is None:
            return s / t if t > 0 else None
        k = self.cfg.prior_strength
        return (s + k * prior) / (t + k) if t + k > 0 else prior

    def state_dict(self) -> dict[str, Any]:
        return {"items": list(self.items.items()), "tasks": dict(self.tasks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.items = OrderedDict((k, tuple(v)) for k, v in state["items"])
        self.tasks = dict(state["tasks"])


def group_size_for(rate: float | None, default: int, min_size: int, max_size: int, target: float) -> int:
    """CodeV-R1-style adaptive sampling: the smallest n in [min_size, max_size] whose chance of an all-equal
    group, ``p^n + (1-p)^n``, is at most ``target``; ``default`` for an unseen item (no estimate)."""
    if rate is None:
        return default
    for n in range(min_size, max_size + 1):
        if rate**n + (1 - rate) ** n <= target:
            return n
    return max_size
