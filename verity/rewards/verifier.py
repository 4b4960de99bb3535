"""What a verifier is: a plain function ``fn(completion: str, **fields) -> float | Score | None`` (the TRL
reward-function contract): ``fields`` are the item's ``prompt``, ``answer``, ``task``, ``id`` and every key of
``Item.meta``, plus the verifier's settings from the config. ``None`` means "cannot score this item". A built-in is
marked ``register_verifier("name")``; ``verity.rewards.registry`` finds it by that name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from verity.registry import registered_as

Verifier = Callable[..., Any]
VERIFIER = "verifier"  # the registry's kind


def register_verifier(
    name: str, preload: tuple[str, ...] = (), batched: bool = False
) -> Callable[[Verifier], Verifier]:
    """Mark ``fn`` as the built-in verifier ``name``. ``preload`` names modules a worker process imports before its
    first call, so a slow import is not charged to the first item's timeout. ``batched`` marks a verifier called
    once per list of completions, ``fn(completions, fields, **settings) -> list`` (``fields``: one dict per
    completion)."""

    def decorate(fn: Verifier) -> Verifier:
        fn.batched = batched  # type: ignore[attr-defined]
        fn.preload = preload  # type: ignore[attr-defined]
        return registered_as(VERIFIER, name)(fn)

    return decorate


def is_batched(fn: Verifier) -> bool:
    """True for a verifier that scores a list of completions per call (see ``register_verifier``)."""
    return getattr(fn, "batched", False) is True
