"""A pool of verifier worker processes with a wall-clock limit per completion and replacement of dead workers.

Workers start with 'forkserver' or 'spawn', never 'fork': the trainer holds torch threads. A worker imports the
verifiers' heavy libraries before it reports ready, so start-up time is never charged to a completion's limit.

A worker gets several tasks in one message and answers them one by one, in order, so a cheap verifier is not paced
by a round trip per completion (64 cheap answers on 2 workers: 6.3 ms one task per message, 1.35 ms with
batches, 0.38 ms in-process; ``python -m bench.bench_rewards``). How many depends on the measured time per task: up
to 32 while tasks take under a millisecond, otherwise 2, so slow verifiers (code) stay spread evenly over the
workers.
The time limit still applies to each completion alone: it runs from the moment the task reaches the head of its
worker's queue. When a worker hangs or dies, its head task is scored as a failure and the tasks queued behind it
go back to the pending queue for the replacement or another worker. Sandboxed programs a task starts end before
its limit (``sandbox.deadline``), and any a killed worker leaves behind end with it (see
``verity.rewards.sandbox.boot``).
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
from verity.rewards.sandbox.core import clean_up_after, deadline
from verity.types import Item, Score

_BOOT_TIMEOUT_S = 120.0
_FAST_TASK_S = 1e-3
_FAST_BATCH, _SLOW_BATCH = 32, 2  # tasks in flight per worker while tasks take under / over _FAST_TASK_S
_SANDBOX_MARGIN_S = 1.0  # sandboxes end this long (at most a quarter of the limit) before a task's limit


def sandbox_deadline_s(timeout_s: float) -> float:
    """How long the sandboxed programs of one task may run in all, so the verifier answers within ``timeout_s``."""
    return timeout_s - min(_SANDBOX_MARGIN_S, timeout_s / 4)


def _worker_main(conn: Connection, components: list[Component], timeout_s: float) -> None:
    """Worker loop: build the reward, say ready, then score lists of ``(index, item, completion)``, answering each
    task on its own, until told to stop."""
    for spec in {c.spec for c in components}:
        for module in preload_modules(spec):
            importlib.import_module(module)
    reward = ComposedReward(components)
    conn.send(("ready", None))
    while True:
        try:
            batch = conn.recv()
        except EOFError:
            return
        if batch is None:
            return
        if reward.batched:
            _score_together(conn, reward, batch, timeout_s)
            continue
        for index, item, completion in batch:
            try:
                with deadline(sandbox_deadline_s(timeout_s)):
                    score = reward(item, completion)
            except BaseException as exc:  # a verifier calling sys.exit must not end the worker
                score = Score(0.0, reason=f"raised {type(exc).__name__}: {str(exc)[:200]}")
            conn.send((index, score))


def _score_together(
    conn: Connection, reward: ComposedReward, batch: list[tuple[int, Item, str]], timeout_s: float
) -> None:
    try:
        with deadline(sandbox_deadline_s(timeout_s)):
            scores = reward.score_batch([item for _, item, _ in batch], [text for _, _, text in batch])
    except BaseException as exc:
        scores = [Score(0.0, reason=f"raised {type(exc).__name__}: {str(exc)[:200]}")] * len(batch)
    for (index, _, _), score in zip(batch, scores, strict=True):
        conn.send((index, score))


class _Worker:
    def __init__(self, ctx: Any, components: list[Component], timeout_s: float) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, components, timeout_s), daemon=True)
        self.process.start()
        child.close()  # so the parent sees EOF when the worker dies
        self.started = time.monotonic()
        self.ready = False
        self.tasks: deque[int] = deque()  # sent and not yet answered, in the order the worker answers them
        self.deadline = 0.0  # for the head task

    def stop(self, wait_s: float = 0.0) -> None:
        if wait_s > 0 and self.process.is_alive():
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.process.join(wait_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        with contextlib.suppress(OSError):  # a leftover never stops the trainer
            clean_up_after(self.process.pid)
        self.conn.close()


class WorkerPool:
    """``workers`` processes scoring ``(item, completion)`` tasks with the composed reward of ``components``."""

    def __init__(
        self,
        components: Sequence[Component],
        workers: int,
        timeout_s: float,
        start_method: str,
        batch_size: int | None = None,
    ) -> None:
        """``batch_size``: tasks per message for a batched verifier (None: by the measured time per task)."""
        self.components = list(components)
        self.timeout_s = timeout_s
        self.batch_size = batch_size
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            preload = {m for c in self.components for m in preload_modules(c.spec)}
            self._ctx.set_forkserver_preload(["verity.rewards.compose", *sorted(preload)])
        self._workers = [_Worker(self._ctx, self.components, self.timeout_s) for _ in range(workers)]
        self._restarts = 0
        self._task_s = 0.0  # moving average of the seconds one task takes, which sets how many go per message

    def take_restarts(self) -> int:
        """Workers replaced since the previous call."""
        restarts, self._restarts = self._restarts, 0
        return restarts

    def run(self, tasks: list[tuple[Item, str]]) -> list[Score]:
        """Score every task; the i-th score belongs to the i-th task."""
        results: list[Score | None] = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        while pending or any(w.tasks for w in self._workers):
            self._dispatch(tasks, pending)
            self._collect(results, pending, self._wait_timeout())
            self._expire(results, pending)
        return [s if s is not None else Score(0.0, reason="worker crashed before scoring") for s in results]

    def _dispatch(self, tasks: list[tuple[Item, str]], pending: deque[int]) -> None:
        for w in self._workers:
            if self.batch_size is not None:  # a batched verifier: whole batches to idle workers only
                room = 0 if w.tasks else self.batch_size
            else:
                room = (_FAST_BATCH if self._task_s < _FAST_TASK_S else _SLOW_BATCH) - len(w.tasks)
            if not (w.ready and pending and room > 0):
                continue
            if not w.tasks:
                w.deadline = time.monotonic() + self.timeout_s
            batch = [pending.popleft() for _ in range(min(room, len(pending)))]
            w.tasks.extend(batch)
            # A dead worker's send fails; _collect then notices the closed pipe and scores a crash.
            with contextlib.suppress(OSError):
                w.conn.send([(index, *tasks[index]) for index in batch])

    def _wait_timeout(self) -> float:
        deadlines = [w.deadline for w in self._workers if w.tasks]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else 1.0

    def _collect(self, results: list[Score | None], pending: deque[int], timeout: float) -> None:
        by_conn = {w.conn: w for w in self._workers}
        for conn in wait(list(by_conn), timeout):
            w = by_conn[conn]
            while True:
                try:
                    tag, payload = conn.recv()
                except (EOFError, OSError):
                    w.process.join(1.0)  # the pipe closes as the process exits; wait for its exit code
                    self._replace(w, results, pending, f"worker crashed (exit code {w.process.exitcode})")
                    break
                if tag == "ready":
                    w.ready = True
                elif w.tasks and w.tasks[0] == tag:
                    results[tag] = payload
                    w.tasks.popleft()
                    now = time.monotonic()
                    self._task_s = 0.8 * self._task_s + 0.2 * (now - (w.deadline - self.timeout_s))
                    w.deadline = now + self.timeout_s  # the next task starts now
                if not conn.poll():
                    break

    def _expire(self, results: list[Score | None], pending: deque[int]) -> None:
        now = time.monotonic()
        for w in list(self._workers):
            if w.tasks and now >= w.deadline:
                self._replace(w, results, pending, f"timeout after {self.timeout_s:g}s")
            elif not w.ready and now - w.started > _BOOT_TIMEOUT_S:
                raise RuntimeError(f"reward worker did not start within {_BOOT_TIMEOUT_S:g}s")

    def _replace(self, w: _Worker, results: list[Score | None], pending: deque[int], reason: str) -> None:
        """Score ``w``'s head task with ``reason``, requeue the tasks behind it, and start a new worker."""
        if not w.ready and not w.tasks and w.process.exitcode not in (None, 0):
            w.stop()
            raise RuntimeError(f"reward worker failed to start (exit code {w.process.exitcode}); see its stderr")
        if w.tasks:
            results[w.tasks.popleft()] = Score(0.0, reason=reason)
            pending.extendleft(reversed(w.tasks))
        w.stop()
        self._workers[self._workers.index(w)] = _Worker(self._ctx, self.components, self.timeout_s)
        self._restarts += 1

    def close(self) -> None:
        """Ask each worker to exit, then kill any that do not."""
        for w in self._workers:
            w.stop(wait_s=1.0)
        self._workers = []
