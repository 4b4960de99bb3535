"""Composed rewards: several verifiers, weighted and gated, evaluated as one function of (item, completion).

``R = sum_i w_i * g_i * v_i`` where ``v_i`` is verifier i's value and ``g_i`` is 1 unless verifier i is gated by
another component j scoring below its threshold (e.g. accuracy counts only when the format is valid). A verifier
returning ``None`` ("cannot score") drops out of the sum, as in TRL. Every value is kept in ``Score.components``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from verity.rewards.registry import resolve_verifier
from verity.types import Item, Score

_ITEM_FIELDS = ("prompt", "answer", "task", "id")


@dataclass(frozen=True)
class Component:
    """One verifier inside a composed reward (the resolved form of a config entry; picklable for workers)."""

    label: str
    spec: str
    weight: float = 1.0
    settings: dict[str, Any] = field(default_factory=dict)
    gate: str | None = None
    gate_min: float = 1.0


def item_fields(item: Item) -> dict[str, Any]:
    """The keyword arguments a verifier receives for ``item``: its meta, then prompt, answer, task and id."""
    return {**item.meta, "prompt": item.prompt, "answer": item.answer, "task": item.task, "id": item.id}


class _Bound:
    """A verifier with its settings, passing only the keyword arguments its signature accepts."""

    def __init__(self, component: Component) -> None:
        self.fn: Callable[..., Any] = resolve_verifier(component.spec)
        self.settings = dict(component.settings)
        params = inspect.signature(self.fn).parameters.values()
        self.accepts_all = any(p.kind is p.VAR_KEYWORD for p in params)
        self.names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        settable = self.names - {"completion", *_ITEM_FIELDS}
        unknown = sorted(set(self.settings) - settable) if settable or not self.accepts_all else []
        if unknown:
            raise ValueError(
                f"verifier {component.spec!r} (label {component.label!r}) has no setting(s) {unknown}; "
                f"its settings are {sorted(settable) or 'none'}"
            )

    def __call__(self, completion: str, fields: dict[str, Any]) -> Any:
        kwargs = {**fields, **self.settings}
        if not self.accepts_all:
            kwargs = {k: v for k, v in kwargs.items() if k in self.names}
        return self.fn(completion, **kwargs)


def checked_value(result: Any) -> tuple[float | None, str | None]:
    """A verifier's result as ``(value, failure reason)``: ``None`` stays "cannot score"; anything that is not a
    finite real number (NaN, a string, a list) is a failure worth 0.0."""
    reason = None
    if isinstance(result, Score):
        result, reason = result.value, result.reason
    if result is None:
        return None, reason
    if isinstance(result, bool | int | float) and math.isfinite(float(result)):
        return float(result), reason
    return 0.0, f"returned {type(result).__name__} {str(result)[:60]!r}, not a finite number"


class ComposedReward:
    """The reward of a list of components, as a function ``(item, completion) -> Score`` that never raises."""

    def __init__(self, components: Sequence[Component]) -> None:
        if not components:
            raise ValueError("a reward needs at least one verifier")
        self.components = list(components)
        self._bound = {c.label: _Bound(c) for c in self.components}

    def __call__(self, item: Item, completion: str) -> Score:
        fields = item_fields(item)
        values: dict[str, float] = {}
        reasons: list[str] = []
        for c in self.components:
            try:
                value, reason = checked_value(self._bound[c.label](completion, fields))
            except Exception as exc:
                value, reason = 0.0, f"raised {type(exc).__name__}: {str(exc)[:200]}"
            if reason is not None:
                reasons.append(f"{c.label}: {reason}")
            if value is not None:
                values[c.label] = value
        if not values and not reasons:
            return Score(0.0, reason="unscorable: no verifier could score this item")
        total = sum(
            c.weight * values[c.label]
            for c in self.components
            if c.label in values and (c.gate is None or values.get(c.gate, 0.0) >= c.gate_min)
        )
        return Score(total, reason="; ".join(reasons) or None, components=values)
