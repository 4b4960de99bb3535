"""Composed rewards: several verifiers, weighted and gated, evaluated as one function of (item, completion).

``R = sum_i w_i * g_i * v_i`` where ``v_i`` is verifier i's value and ``g_i`` is 1 unless verifier i is gated by
another component j scoring below its threshold (e.g. accuracy counts only when the format is valid). A verifier
returning ``None`` ("cannot score") drops out of the sum, as in TRL. Every value is kept in ``Score.components``.

A batched verifier (``register_verifier(..., batched=True)``, or a function with ``fn.batched = True``) is called
once for a list of completions: ``fn(completions, fields, **settings) -> list`` with one result per completion, so
a model-based verifier runs one forward over all of them. A process verifier's step scores (``Score.steps``) are
kept, scaled by its weight (and zeroed when its gate is closed); at most one component may return them.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from verity.rewards.registry import resolve_verifier
from verity.rewards.verifier import is_batched
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
        self.batched = is_batched(self.fn)
        self.settings = dict(component.settings)
        params = inspect.signature(self.fn).parameters.values()
        self.accepts_all = any(p.kind is p.VAR_KEYWORD for p in params)
        self.names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        settable = self.names - ({"completions", "fields"} if self.batched else {"completion", *_ITEM_FIELDS})
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

    def call_batch(self, completions: list[str], fields: list[dict[str, Any]]) -> list[Any]:
        """One result per completion: a single call of a batched verifier, else one call each."""
        if not self.batched:
            return [_guarded(lambda c=c, f=f: self(c, f)) for c, f in zip(completions, fields, strict=True)]
        try:
            results = list(self.fn(completions, fields, **self.settings))
        except Exception as exc:
            return [_Raised(exc)] * len(completions)
        if len(results) != len(completions):
            bad = _Raised(ValueError(f"returned {len(results)} results for {len(completions)} completions"))
            return [bad] * len(completions)
        return results


class _Raised:
    """What a verifier raised, kept in place of its result for one completion."""

    def __init__(self, exc: Exception) -> None:
        self.reason = f"raised {type(exc).__name__}: {str(exc)[:200]}"


def _guarded(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:
        return _Raised(exc)


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


def finite_score(score: Score) -> Score:
    """``score`` itself when its value and step scores are finite numbers; else a failure worth 0.0 whose reason
    says so (step scores zeroed), so a NaN or infinite reward is counted and warned as a verifier failure and no
    estimator ever reads it (a NaN would count as wrong in a threshold and make a whole group's mean NaN)."""
    steps_finite = all(math.isfinite(v) for _, v in score.steps)
    if math.isfinite(score.value) and steps_finite:
        return score
    what = f"reward {score.value!r}" if not math.isfinite(score.value) else "step scores"
    reason = f"non-finite {what}, scored 0" + (f"; {score.reason}" if score.reason else "")
    steps = tuple((end, 0.0) for end, _ in score.steps)
    return Score(0.0, reason=reason, components=score.components, steps=steps)


class ComposedReward:
    """The reward of a list of components, as a function ``(item, completion) -> Score`` that never raises;
    ``score_batch`` scores many completions at once (batched verifiers see them all in one call)."""

    def __init__(self, components: Sequence[Component]) -> None:
        if not components:
            raise ValueError("a reward needs at least one verifier")
        self.components = list(components)
        self._bound = {c.label: _Bound(c) for c in self.components}

    @property
    def batched(self) -> bool:
        """True when a component is a batched verifier (its worker should get many completions per call)."""
        return any(b.batched for b in self._bound.values())

    def __call__(self, item: Item, completion: str) -> Score:
        return self.score_batch([item], [completion])[0]

    def score_batch(self, items: Sequence[Item], completions: Sequence[str]) -> list[Score]:
        """One ``Score`` per (item, completion) pair, in order."""
        fields = [item_fields(item) for item in items]
        results = {c.label: self._bound[c.label].call_batch(list(completions), fields) for c in self.components}
        return [self._compose({label: r[i] for label, r in results.items()}) for i in range(len(fields))]

    def _compose(self, results: dict[str, Any]) -> Score:
        values: dict[str, float] = {}
        reasons: list[str] = []
        steps: dict[str, tuple[tuple[int, float], ...]] = {}
        for c in self.components:
            result = results[c.label]
            if isinstance(result, _Raised):
                value, reason = 0.0, result.reason
            else:
                value, reason = checked_value(result)
                if isinstance(result, Score) and result.steps:
                    steps[c.label] = result.steps
            if reason is not None:
                reasons.append(f"{c.label}: {reason}")
            if value is not None:
                values[c.label] = value
        if not values and not reasons:
            return Score(0.0, reason="unscorable: no verifier could score this item")
        counted = {c.label for c in self.components if c.gate is None or values.get(c.gate, 0.0) >= c.gate_min}
        total = sum(c.weight * values[c.label] for c in self.components if c.label in values.keys() & counted)
        if len(steps) > 1:
            reasons.append(f"step scores from {sorted(steps)}: at most one verifier may score steps")
        weighted: tuple[tuple[int, float], ...] = ()
        for c in self.components:
            if c.label in steps and len(steps) == 1:
                scale = c.weight if c.label in counted else 0.0
                weighted = tuple((end, scale * float(v)) for end, v in steps[c.label])
        return finite_score(Score(total, reason="; ".join(reasons) or None, components=values, steps=weighted))
