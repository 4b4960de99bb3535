"""Verifier registry: built-in verifiers by name, user verifiers by import path.

A verifier is a plain function ``fn(completion: str, **fields) -> float | Score | None`` (the TRL reward-function
contract): ``fields`` are the item's ``prompt``, ``answer``, ``task``, ``id`` and every key of ``Item.meta``, plus
the verifier's settings from the config. ``None`` means "cannot score this item".
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any

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
)

_REGISTRY: dict[str, Verifier] = {}
_PRELOAD: dict[str, tuple[str, ...]] = {}


def register_verifier(name: str, preload: tuple[str, ...] = ()) -> Callable[[Verifier], Verifier]:
    """Register ``fn`` under ``name``. ``preload`` names modules a worker process imports before its first call,
    so a slow import is not charged to the first item's timeout."""

    def decorate(fn: Verifier) -> Verifier:
        known = _REGISTRY.get(name)
        if known is not None and known is not fn:
            raise ValueError(
                f"verifier name {name!r} is already registered by {known.__module__}.{known.__name__}"
            )
        _REGISTRY[name] = fn
        _PRELOAD[name] = preload
        return fn

    return decorate


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def registered_verifiers() -> list[str]:
    """The names of all registered verifiers, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def preload_modules(spec: str) -> tuple[str, ...]:
    """Modules worth importing before the verifier named by ``spec`` is first called."""
    _load_builtins()
    return _PRELOAD.get(spec, ())


def resolve_verifier(spec: str) -> Verifier:
    """The verifier for a registered name (``"accuracy"``) or an import path (``"my_pkg.rewards:score"``)."""
    if ":" in spec:
        return _import_verifier(spec)
    _load_builtins()
    if spec in _REGISTRY:
        return _REGISTRY[spec]
    close = difflib.get_close_matches(spec, _REGISTRY, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise KeyError(
        f"unknown verifier {spec!r}.{hint} Registered verifiers: {', '.join(sorted(_REGISTRY))}. "
        "A user verifier is named by its import path, 'package.module:function'."
    )


def _import_verifier(spec: str) -> Verifier:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"verifier import path {spec!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"verifier {spec!r}: cannot import module {module_name!r}: {exc}") from exc
    fn = getattr(module, attr, None)
    if fn is None:
        public = [name for name in vars(module) if not name.startswith("_")]
        close = difflib.get_close_matches(attr, public, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise AttributeError(f"verifier {spec!r}: module {module_name!r} has no attribute {attr!r}.{hint}")
    if not callable(fn):
        raise TypeError(f"verifier {spec!r}: {attr!r} is a {type(fn).__name__}, not a function")
    return fn
