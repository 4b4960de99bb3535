"""Verifier registry: built-in verifiers by name (marked ``register_verifier`` in their modules), user verifiers by
import path. What a verifier is: ``verity.rewards.verifier``."""

from __future__ import annotations

from verity.registry import Registry
from verity.rewards.verifier import VERIFIER, Verifier

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

_VERIFIERS: Registry[Verifier] = Registry(VERIFIER, _BUILTIN_MODULES)


def registered_verifiers() -> list[str]:
    """The names of all registered verifiers, sorted."""
    return _VERIFIERS.names()


def preload_modules(spec: str) -> tuple[str, ...]:
    """Modules worth importing before the verifier named by ``spec`` is first called."""
    return tuple(getattr(resolve_verifier(spec), "preload", ())) if spec in _VERIFIERS else ()


def resolve_verifier(spec: str) -> Verifier:
    """The verifier for a registered name (``"accuracy"``) or an import path (``"my_pkg.rewards:score"``)."""
    return _VERIFIERS.resolve(spec)
