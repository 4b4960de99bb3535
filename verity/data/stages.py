"""Curriculum stages: a list of settings the run moves through by step count or by a metric condition.

Domain cascades (Nemotron-Cascade) are stages with different ``tasks``; length-progressive training (MiroMind)
raises ``max_new_tokens`` from stage to stage; a hard-focus stage (DRIVE) sets ``hard_focus``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from verity.data.config import CONDITION, StageConfig

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


def condition_met(condition: str, metrics: Mapping[str, float]) -> bool:
    """Whether ``metrics`` satisfies ``'<key> <op> <number>'``; a metric the step did not report never does."""
    match = CONDITION.match(condition)
    if match is None:
        raise ValueError(f"{condition!r} is not a condition of the form '<metric> <op> <number>'")
    value = metrics.get(match["key"])
    return value is not None and _OPS[match["op"]](float(value), float(match["value"]))


class StageSchedule:
    """Which stage is active. A stage ends after ``steps`` steps in it, or at the first step whose metrics meet
    ``until``, whichever comes first; the last stage lasts until the run ends."""

    def __init__(self, stages: list[StageConfig]) -> None:
        self.stages = stages
        self.index = 0
        self.steps_in_stage = 0

    @property
    def current(self) -> StageConfig | None:
        return self.stages[self.index] if self.stages else None

    def end_step(self, metrics: Mapping[str, float]) -> bool:
        """Count a finished step; returns True when the run moves to the next stage."""
        stage = self.current
        if stage is None:
            return False
        self.steps_in_stage += 1
        if self.index == len(self.stages) - 1:
            return False
        done = stage.steps is not None and self.steps_in_stage >= stage.steps
        if stage.until is not None and condition_met(stage.until, metrics):
            done = True
        if done:
            self.index += 1
            self.steps_in_stage = 0
        return done

    def state_dict(self) -> dict[str, Any]:
        return {"index": self.index, "steps_in_stage": self.steps_in_stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.index = state["index"]
        self.steps_in_stage = state["steps_in_stage"]
