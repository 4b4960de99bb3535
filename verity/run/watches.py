"""Watches for a run that finishes "successfully" and learns nothing: steps whose groups carry no reward signal,
and training reward far above held-out accuracy. Each warns once, with the numbers, the likely cause and the
setting to change."""

from __future__ import annotations

from collections import deque
from typing import Any

from verity.types import Rollout

WINDOW = 10  # steps a condition must hold (on average) before it is reported


class NoSignal(RuntimeError):
    """Most groups had all-equal rewards for a sustained stretch, and train.stop_without_signal asked to stop."""


def group_signal(rollouts: list[Rollout], threshold: float) -> dict[str, float]:
    """Over the step's groups of two or more: the share whose rewards are all equal (``flat``), split into all
    right (each reward at least ``threshold``) and all wrong, and how much a group's samples differ ((distinct
    completions - 1) / (size - 1), averaged: 0 when every group is one completion repeated)."""
    groups: dict[int, list[Rollout]] = {}
    for r in rollouts:
        groups.setdefault(r.group, []).append(r)
    sized = [g for g in groups.values() if len(g) > 1]
    if not sized:
        return {}
    flat = [g for g in sized if len({r.reward for r in g}) == 1]
    right = sum(g[0].reward >= threshold for g in flat)
    distinct = [(len({tuple(r.completion.token_ids) for r in g}) - 1) / (len(g) - 1) for g in sized]
    logprobs = [lp for r in rollouts for lp in r.completion.logprobs]
    return {
        "signal/flat_groups": len(flat) / len(sized),
        "signal/all_right": right / len(sized),
        "signal/all_wrong": (len(flat) - right) / len(sized),
        "signal/distinct_samples": sum(distinct) / len(distinct),
        "signal/entropy": -sum(logprobs) / max(len(logprobs), 1),
    }


class SignalWatch:
    """Warns once when, over ``WINDOW`` steps, at least ``SHARE`` of the groups on average had all-equal rewards:
    their group-relative advantages are all zero, so those steps teach nothing. The warning names the likely
    cause from the numbers: samples that do not differ (a base sampling deterministically), groups all right (a
    memorized or too easy training pool, ``pool`` questions when known) or all wrong (a task too hard for the
    base). With ``stop`` it raises ``NoSignal`` instead."""

    SHARE = 0.8
    SAME_SAMPLES = 0.1  # distinct-samples share under which sampling counts as deterministic

    def __init__(self, pool: dict[str, int | None], temperature: float, stop: bool = False) -> None:
        self.pool = {task: n for task, n in pool.items() if n is not None}
        self.temperature = temperature
        self.stop = stop
        self.recent: deque[dict[str, float]] = deque(maxlen=WINDOW)
        self.warned = False

    def observe(self, step: int, signal: dict[str, float]) -> list[str]:
        if not signal or self.warned:
            return []
        self.recent.append(signal)
        if len(self.recent) < WINDOW:
            return []
        mean = {k: sum(s[k] for s in self.recent) / WINDOW for k in self.recent[0]}
        if mean["signal/flat_groups"] < self.SHARE:
            return []
        self.warned = True
        message = (
            f"steps {step - WINDOW + 1}-{step}: {mean['signal/flat_groups']:.0%} of groups had all-equal rewards "
            f"({mean['signal/all_right']:.0%} all right, {mean['signal/all_wrong']:.0%} all wrong; distinct "
            f"samples {mean['signal/distinct_samples']:.2f}, sampling entropy {mean['signal/entropy']:.3f}): "
            f"their advantages are zero, so these steps teach almost nothing. {self._cause(mean)}"
        )
        if self.stop:
            raise NoSignal(f"{message} (stopped: train.stop_without_signal is set)")
        return [message]

    def _cause(self, mean: dict[str, float]) -> str:
        if mean["signal/distinct_samples"] < self.SAME_SAMPLES:
            return (
                "Likely cause: the policy samples deterministically (each group is one answer repeated at "
                f"rollout.temperature={self.temperature:g}). Raise rollout.temperature, or start from a base that "
                "keeps its samples varied (a tiny base: model.warmup.min_diversity, fewer model.warmup.max_steps)"
            )
        if mean["signal/all_right"] >= mean["signal/all_wrong"]:
            sizes = ", ".join(f"{task}: about {n}" for task, n in self.pool.items())
            known = f" (distinct training questions: {sizes})" if sizes else ""
            return (
                f"Likely cause: a memorized or too easy training pool{known}. Give the task more distinct or "
                "harder questions (data.tasks' kwargs or rows), or lower train.steps"
            )
        return (
            "Likely cause: the task is too hard for the base (almost no sample is right). Start from a more "
            "competent base (a tiny base: model.warmup.stop_at_accuracy), make the task easier, or raise "
            "rollout.group_size so a rare right answer is sampled"
        )


class GapWatch:
    """Warns once when training accuracy, averaged over the last ``WINDOW`` steps, is above the latest held-out
    accuracy by at least ``GAP`` and by more than three held-out sampling errors: the policy answers the
    questions it trains on and not new ones (memorization)."""

    GAP = 0.3

    def __init__(self, n_items: int) -> None:
        self.n_items = max(n_items, 1)
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self.held_out: tuple[int, float] | None = None
        self.warned = False

    def observe_eval(self, step: int, result: dict[str, Any]) -> None:
        self.held_out = (step, float(result["accuracy"]))

    def observe_step(self, step: int, accuracy: float) -> list[str]:
        self.recent.append(accuracy)
        if self.warned or self.held_out is None or len(self.recent) < WINDOW:
            return []
        train = sum(self.recent) / WINDOW
        at, held = self.held_out
        error = max(held * (1 - held), 1 / self.n_items) ** 0.5 / self.n_items**0.5
        if train - held < max(self.GAP, 3 * error):
            return []
        self.warned = True
        return [
            f"step {step}: training accuracy {train:.2f} (mean of steps {step - WINDOW + 1}-{step}) against "
            f"held-out accuracy {held:.2f} (step {at}, {self.n_items} items): the policy answers the questions it "
            "trains on, not new ones, so it is memorizing. Give the task more distinct training questions or "
            "lower train.steps; held-out accuracy is the number to judge the run by"
        ]
