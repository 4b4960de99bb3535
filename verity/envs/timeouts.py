"""Calls that must not hang the run: a function on a daemon thread, waited for a limited time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class CallTimedOut(Exception):
    """A call did not return within its limit."""


def call_with_timeout(fn: Callable[[], T], timeout_s: float, name: str) -> T:
    """``fn()``'s result (or its exception, raised again here) if it returns within ``timeout_s``; else
    ``CallTimedOut``. A thread cannot be killed: a call past its limit is left to finish, or hang, on its own
    daemon thread, which does not keep the process alive."""
    outcome: list[tuple[bool, Any]] = []

    def target() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as err:  # handed to the caller
            outcome.append((False, err))

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        raise CallTimedOut(f"{name} did not return within {timeout_s:g} s")
    returned, value = outcome[0]
    if not returned:
        raise value
    return value
