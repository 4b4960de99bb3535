"""Choosing which items a step practises, and how many rollouts each gets.

The loop talks to a ``Sampler`` through a few calls: ``sample(n)`` -> draws (item + group size),
``observe(rollouts)`` after scoring, ``end_step(metrics)`` after the update, ``demonstrations()`` for the
interleaved SFT rounds (``verity.data.demos``), and ``metrics()``. Its whole state (stream positions, random
state, pass rates, hard pool, demonstration queues, stage) is checkpointed, so a resumed run sees the same items in
the same order.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from verity.data.config import DataConfig, HardFocusConfig
from verity.data.demos import DemoBank, Demonstration
from verity.data.difficulty import PassRates, group_size_for
from verity.data.groups import split_groups
from verity.data.images import item_key
from verity.data.sources import TaskSource
from verity.data.stages import StageSchedule
from verity.schema import ConfigError
from verity.types import Item, Rollout, SamplingParams


@dataclass(frozen=True)
class Draw:
    """One prompt chosen for a step and the number of rollouts to spend on it."""

    item: Item
    group_size: int
    hard: bool = False


class Sampler:
    """Draws items from task sources by weight ('mixture') or in equal shares ('balanced'), learns pass rates
    from scored rollouts, and applies the active stage's tasks, group size and hard-focus settings.

    Items whose prompt text is among the held-out prompts are skipped, so evaluation measures items never
    trained on (small procedural families repeat questions across seeds).
    """

    def __init__(
        self,
        sources: list[TaskSource],
        data: DataConfig,
        params: SamplingParams,
        *,
        held_out: set[str],
        seed: int,
        threshold: float = 1.0,
    ) -> None:
        if not sources or len(sources) != len(data.tasks):
            raise ValueError("Sampler needs one source per entry of data.tasks, and at least one")
        self.sources = sources
        self.data = data
        self.weights = {t.name: t.weight for t in data.tasks}
        self.base_params = params
        self.held_out = held_out
        self.threshold = threshold
        self.rates = PassRates(data.difficulty)
        self.schedule = StageSchedule(data.stages)
        self._rng = random.Random(seed)
        self._next = [0] * len(sources)
        self._turn = 0  # balanced sampling: which task the next draw starts from
        self._pool: OrderedDict[str, Item] = OrderedDict()  # hard-focus candidates, least recently seen first
        self._pool_size = max((s.hard_focus.pool_size for s in data.stages if s.hard_focus), default=0)
        self.demos = DemoBank(data, threshold)
        self._steps = 0
        self.skipped = 0

    # -- what the active stage asks for --------------------------------------------------------------------

    @property
    def stage_name(self) -> str | None:
        stage = self.schedule.current
        return stage.name if stage else None

    def active_sources(self) -> list[int]:
        stage = self.schedule.current
        names = set(stage.tasks) if stage and stage.tasks else None
        return [i for i, s in enumerate(self.sources) if names is None or s.name in names]

    def params(self) -> SamplingParams:
        """How this stage samples: ``rollout``'s parameters with the stage's completion length and group size
        (a draw's own group size, from its pass rate, replaces ``n`` when it is generated)."""
        stage = self.schedule.current
        if stage is None:
            return self.base_params
        return replace(
            self.base_params,
            max_new_tokens=stage.max_new_tokens or self.base_params.max_new_tokens,
            n=stage.group_size or self.base_params.n,
        )

    def _mode(self) -> str:
        stage = self.schedule.current
        return stage.sampling if stage and stage.sampling else self.data.sampling

    # -- drawing -------------------------------------------------------------------------------------------

    def sample(self, n: int) -> list[Draw]:
        """``n`` draws: first the hard-pool share (in a hard-focus stage), then fresh items from the streams."""
        stage = self.schedule.current
        draws = self._hard_draws(stage.hard_focus, n) if stage and stage.hard_focus else []
        for source_index in self._choose_sources(n - len(draws)):
            item = self._next_item(source_index)
            draws.append(Draw(item, self._group_size(item)))
        return draws

    def _choose_sources(self, n: int) -> list[int]:
        active = self.active_sources()
        if self._mode() == "balanced":
            # QwenLong-L1.5 task-balanced sampling: every task gets floor(n/T) or ceil(n/T) prompts; the task that
            # gets the extra one rotates, so shares are exact over steps whatever the tasks' sizes or weights.
            chosen = [active[(self._turn + j) % len(active)] for j in range(n)]
            self._turn = (self._turn + n) % len(active)
            return chosen
        weights = [self.weights[self.sources[i].name] for i in active]
        return self._rng.choices(active, weights=weights, k=n)

    def _next_item(self, source_index: int) -> Item:
        source = self.sources[source_index]
        for _ in range(10_000):
            item = source.train_item(self._next[source_index])
            self._next[source_index] += 1
            if item_key(item) not in self.held_out:
                return item
            self.skipped += 1
        raise ConfigError(held_out_message(source.name, 10_000))

    def _group_size(self, item: Item) -> int:
        base = self.params().n
        cfg = self.data.adaptive_group
        if not cfg.enabled:
            return base
        rate = self.item_rate(item)
        return group_size_for(rate, base, cfg.min_size, cfg.max_size, cfg.target)

    def item_rate(self, item: Item) -> float | None:
        return self.rates.item_rate(item.id, item.task)

    def hard_pool(self, cfg: HardFocusConfig) -> list[Item]:
        """Items of the active tasks seen at least ``min_trials`` times whose estimate is at most the bound."""
        tasks = {self.sources[i].name for i in self.active_sources()}
        return [
            item
            for item in self._pool.values()
            if item.task in tasks
            and self.rates.trials(item.id) >= cfg.min_trials
            and (self.item_rate(item) or 0.0) <= cfg.max_pass_rate
        ]

    def _hard_draws(self, cfg: HardFocusConfig, n: int) -> list[Draw]:
        """DRIVE's hard-focus stage: ``round(fraction * n)`` items drawn at random from the hard pool, each with
        the larger ``group_size``; fewer when the pool is smaller."""
        pool = self.hard_pool(cfg)
        k = min(round(cfg.fraction * n), len(pool))
        return [Draw(item, cfg.group_size, hard=True) for item in self._rng.sample(pool, k)]

    # -- learning from rollouts ----------------------------------------------------------------------------

    def observe(self, rollouts: list[Rollout]) -> None:
        """Update pass rates, the hard pool and the demonstration queues from one round of scored rollouts."""
        self.demos.observe(split_groups(rollouts))
        for item, rewards in group_rewards(rollouts):
            successes = sum(r >= self.threshold for r in rewards)
            self.rates.observe(item.id, item.task, successes, len(rewards))
            if self._pool_size:
                self._pool.pop(item.id, None)
                self._pool[item.id] = item
                while len(self._pool) > self._pool_size:
                    self._pool.popitem(last=False)

    def end_step(self, metrics: dict[str, float]) -> bool:
        """Count a finished RL step and move stages if due; returns True on a stage change."""
        self._steps += 1
        return self.schedule.end_step(metrics)

    def demonstrations(self) -> list[tuple[str, list[Demonstration]]]:
        """The SFT rounds due in this RL step (called before ``end_step`` counts it): (recipe, demonstrations)
        for each recipe whose ``every``-th step this is, oldest demonstrations first."""
        return self.demos.due(self._steps)

    def metrics(self) -> dict[str, float]:
        out = {"data/stage": float(self.schedule.index), **self.demos.metrics()}
        for source in self.sources:
            rate = self.rates.task_rate(source.name)
            if rate is not None:
                out[f"task/{source.name}/pass_rate_est"] = rate
        if self._pool_size:
            out["data/hard_pool"] = float(len(self._pool))
        return out

    # -- checkpointing -------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self._rng.getstate(),
            "next": list(self._next),
            "turn": self._turn,
            "skipped": self.skipped,
            "steps": self._steps,
            "rates": self.rates.state_dict(),
            "schedule": self.schedule.state_dict(),
            "pool": list(self._pool.values()),
            "demos": self.demos.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rng.setstate(state["rng"])
        self._next = list(state["next"])
        self._turn = state["turn"]
        self.skipped = state["skipped"]
        self._steps = state["steps"]
        self.rates.load_state_dict(state["rates"])
        self.schedule.load_state_dict(state["schedule"])
        self._pool = OrderedDict((item.id, item) for item in state["pool"])
        self.demos.load_state_dict(state.get("demos", {}))  # older checkpoints: queues start empty


def group_rewards(rollouts: list[Rollout]) -> list[tuple[Item, list[float]]]:
    """(item, rewards of its group) for each group, in order of first appearance."""
    groups: dict[int, tuple[Item, list[float]]] = {}
    for r in rollouts:
        groups.setdefault(r.group, (r.item, []))[1].append(r.reward)
    return list(groups.values())


def held_out_message(task: str, run: int) -> str:
    """The error when a task's training items keep having held-out prompts."""
    return (
        f"task {task!r}: {run} training items in a row have the prompt of a held-out item, so no training item "
        "can be drawn; give each item a distinct prompt (e.g. include its numbers or an id), or hold out fewer "
        "items (data.eval_items)"
    )
