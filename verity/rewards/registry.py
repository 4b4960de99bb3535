"""Verifier registry: built-in verifiers by name, user verifiers by import path.

A verifier is a plain function ``fn(completion: str, **fields) -> float | Score | None`` (the TRL reward-function
contract): ``fields`` are the item's ``prompt``, ``answer``, ``task``, ``id`` and every key of ``Item.meta``, plus
the verifier's settings from the config. ``None`` means "cannot score this item".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from verity.registry import Registry

Verifier = Callable[..., Any]

# Modules whose import registers the built-in verifiers. Imported on first lookup so that ``import verity.rewards``
# stays cheap; the heavy libraries they use (math-verify, reasoning-gym) are imported inside the verifiers.
_BUILTIN_MODULES = (
    "verity.rewards.match",
    "verity.rewards.format",
    "verity.rewards.puzzles",
    "verity.rewards.math",
    "verity.rewards.labels",
    "verity.rewards.code",
    "verity.rewards.steps",
    "verity.rewards.model_rewards",
)

_VERIFIERS: Registry[Verifier] = Registry("verifier", _BUILTIN_MODULES)
_PRELOAD: dict[str, tuple[str, ...]] = {}


def register_verifier(
    name: str, preload: tuple[str, ...] = (), batched: bool = False
) -> Callable[[Verifier], Verifier]:
    """Register ``fn`` under ``name``. ``preload`` names modules a worker process imports before its first call,
    so a slow import is not charged to the first item's timeout. ``batched`` marks a verifier called once per
    list of completions, ``fn(completions, fields, **settings) -> list`` (``fields``: one dict per completion)."""

    def decorate(fn: Verifier) -> Verifier:
        if batched:
            fn.batched = True  # type: ignore[attr-defined]
        _VERIFIERS.register(name)(fn)
        _PRELOAD[name] = preload
        return fn

    return decorate


def is_batched(fn: Verifier) -> bool:
    """True for a verifier that scores a list of completions per call (see ``register_verifier``)."""
    return getattr(fn, "batched", False) is True


def registered_verifiers() -> list[str]:
    """The names of all registered verifiers, sorted."""
    return _VERIFIERS.names()


def preload_modules(spec: str) -> tuple[str, ...]:
    """Modules worth importing before the verifier named by ``spec`` is first called."""
    _VERIFIERS.names()  # loads the built-ins, whose registration records their preloads
    return _PRELOAD.get(spec, ())


def resolve_verifier(spec: str) -> Verifier:
    """The verifier for a registered name (``"accuracy"``) or an import path (``"my_pkg.rewards:score"``)."""
    return _VERIFIERS.resolve(spec)
