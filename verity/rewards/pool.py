"""A pool of verifier worker processes with a wall-clock limit per completion and replacement of dead workers.

Workers start with 'forkserver' or 'spawn', never 'fork': the trainer holds torch threads. A worker imports the
verifiers' heavy libraries before it reports ready, so start-up time is never charged to a completion's limit.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from verity.rewards.compose import Component, ComposedReward
from verity.rewards.registry import preload_modules
from verity.types import Item, Score

_BOOT_TIMEOUT_S = 120.0


def _worker_main(conn: Connection, components: list[Component]) -> None:
    """Worker loop: build the reward, say ready, then score ``(index, item, completion)`` until told to stop."""
    for spec in {c.spec for c in components}:
        for module in preload_modules(spec):
            importlib.import_module(module)
    reward = ComposedReward(components)
    conn.send(("ready", None))
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        index, item, completion = task
        try:
            score = reward(item, completion)
        except BaseException as exc:  # a verifier calling sys.exit must not end the worker
            score = Score(0.0, reason=f"raised {type(exc).__name__}: {str(exc)[:200]}")
        conn.send((index, score))


class _Worker:
    def __init__(self, ctx: Any, components: list[Component]) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, components), daemon=True)
        self.process.start()
        child.close()  # so the parent sees EOF when the worker dies
        self.started = time.monotonic()
        self.ready = False
        self.task: int | None = None
        self.deadline = 0.0

    def stop(self, wait_s: float = 0.0) -> None:
        if wait_s > 0 and self.process.is_alive():
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.process.join(wait_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()


class WorkerPool:
    """``workers`` processes scoring ``(item, completion)`` tasks with the composed reward of ``components``."""

    def __init__(self, components: Sequence[Component], workers: int, timeout_s: float, start_method: str) -> None:
        self.components = list(components)
        self.timeout_s = timeout_s
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            preload = {m for c in self.components for m in preload_modules(c.spec)}
            self._ctx.set_forkserver_preload(["verity.rewards.compose", *sorted(preload)])
        self._workers = [_Worker(self._ctx, self.components) for _ in range(workers)]
        self._restarts = 0

    def take_restarts(self) -> int:
        """Workers replaced since the previous call."""
        restarts, self._restarts = self._restarts, 0
        return restarts

    def run(self, tasks: list[tuple[Item, str]]) -> list[Score]:
        """Score every task; the i-th score belongs to the i-th task."""
        results: list[Score | None] = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        while pending or any(w.task is not None for w in self._workers):
            self._dispatch(tasks, pending)
            self._collect(results, self._wait_timeout())
            self._expire(results)
        return [s if s is not None else Score(0.0, reason="worker crashed before scoring") for s in results]

    def _dispatch(self, tasks: list[tuple[Item, str]], pending: deque[int]) -> None:
        for w in self._workers:
            if w.ready and w.task is None and pending:
                index = pending.popleft()
                w.task, w.deadline = index, time.monotonic() + self.timeout_s
                # A dead worker's send fails; _collect then notices the closed pipe and scores a crash.
                with contextlib.suppress(OSError):
                    w.conn.send((index, *tasks[index]))

    def _wait_timeout(self) -> float:
        deadlines = [w.deadline for w in self._workers if w.task is not None]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else 1.0

    def _collect(self, results: list[Score | None], timeout: float) -> None:
        by_conn = {w.conn: w for w in self._workers}
        for conn in wait(list(by_conn), timeout):
            w = by_conn[conn]
            try:
                tag, payload = conn.recv()
            except (EOFError, OSError):
                w.process.join(1.0)  # the pipe closes as the process exits; wait for its exit code
                self._replace(w, results, f"worker crashed (exit code {w.process.exitcode})")
                continue
            if tag == "ready":
                w.ready = True
            elif w.task == tag:
                results[tag], w.task = payload, None

    def _expire(self, results: list[Score | None]) -> None:
        now = time.monotonic()
        for w in list(self._workers):
            if w.task is not None and now >= w.deadline:
                self._replace(w, results, f"timeout after {self.timeout_s:g}s")
            elif not w.ready and now - w.started > _BOOT_TIMEOUT_S:
                raise RuntimeError(f"reward worker did not start within {_BOOT_TIMEOUT_S:g}s")

    def _replace(self, w: _Worker, results: list[Score | None], reason: str) -> None:
        if not w.ready and w.task is None and w.process.exitcode not in (None, 0):
            w.stop()
            raise RuntimeError(f"reward worker failed to start (exit code {w.process.exitcode}); see its stderr")
        if w.task is not None:
            results[w.task] = Score(0.0, reason=reason)
        w.stop()
        self._workers[self._workers.index(w)] = _Worker(self._ctx, self.components)
        self._restarts += 1

    def close(self) -> None:
        """Ask each worker to exit, then kill any that do not."""
        for w in self._workers:
            w.stop(wait_s=1.0)
        self._workers = []
