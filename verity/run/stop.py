"""Stopping a run: what Ctrl-C (SIGINT) and SIGTERM do at each moment of it."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from verity.run.console import INTERRUPTED, stop_children, terminal_err


class StopFlag:
    """Ctrl-C (SIGINT) and SIGTERM during a run. While ``deferred`` (the steps), the first one asks to stop after
    the current step, which then writes a checkpoint; a second one interrupts at once (checkpoints and summaries
    are written aside and renamed, so the last one stays valid). Otherwise (base build, engine and Ray start-up,
    evaluations before and after, the final model) the first one interrupts at once, with ``KeyboardInterrupt``.

    A library waiting on other processes may swallow that exception (vLLM's start-up polls with pyzmq, which drops
    an exception raised by a signal handler, then waits for its engine for minutes): when the process has not
    ended ``grace_s`` seconds after an interruption, ``on_force`` runs (it writes the summary), the processes this
    one started are ended and it exits with 130."""

    def __init__(self, grace_s: float = 10.0) -> None:
        self.requested = False
        self.deferred = False
        self.grace_s = grace_s
        self.on_force: Callable[[], None] = lambda: None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        first, self.requested = not self.requested, True
        if first and self.deferred:
            return
        timer = threading.Timer(self.grace_s, self._force)
        timer.daemon = True
        timer.start()
        raise KeyboardInterrupt

    def _force(self) -> None:
        with contextlib.suppress(Exception):
            self.on_force()
        stop_children()
        print(INTERRUPTED, file=terminal_err(), flush=True)
        os._exit(130)

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a stop was asked for (and swallowed on its way)."""
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self) -> StopFlag:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
