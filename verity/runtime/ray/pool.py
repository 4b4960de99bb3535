"""A pool of Ray actors of one kind that run jobs from a FIFO queue, one job per actor at a time.

Idle actors take the oldest queued job (so long generations do not hold up short ones). A job whose actor
dies is put back at the head of the queue and the actor is replaced (``max_restarts`` times per rank), so a job
is lost only when the run fails, and its result is delivered once. Every wait has a deadline and an error that
names the worker.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from verity.runtime.base import WorkerRestart


class RemoteTimeout(RuntimeError):
    """A remote call took longer than its limit; the message names the worker and the call."""


class WeightSyncTimeout(RemoteTimeout):
    """A worker did not take new weights within ``runtime.ray.sync_timeout_s``."""


class WorkerFailed(RuntimeError):
    """A worker raised, or died more often than ``runtime.ray.max_restarts`` allows."""


@dataclass
class Job:
    id: int
    method: str
    args: tuple[Any, ...]
    started: float = 0.0


class ActorWorkers:
    """``n`` actors made by ``make(rank)``; ``on_start(rank, actor)`` runs on each replacement actor (e.g. to
    give it the current weights) before it takes a job."""

    def __init__(
        self,
        kind: str,
        make: Callable[[int], Any],
        n: int,
        timeout_s: float,
        max_restarts: int,
        on_start: Callable[[int, Any], None] | None = None,
    ) -> None:
        self.kind = kind
        self.make = make
        self.timeout_s = timeout_s
        self.max_restarts = max_restarts
        self.on_start = on_start
        self.actors = [make(rank) for rank in range(n)]
        self.restarts = [0] * n
        self.replaced: list[WorkerRestart] = []  # since the runtime last took them
        self.queue: deque[Job] = deque()
        self.running: dict[Any, tuple[int, Job]] = {}

    def submit(self, job: Job) -> None:
        self.queue.append(job)

    def idle(self) -> bool:
        return not self.queue and not self.running

    def pending_jobs(self) -> list[Job]:
        """Queued and running jobs, oldest first."""
        return sorted([*self.queue, *(job for _, job in self.running.values())], key=lambda j: j.id)

    def poll(self, timeout: float) -> list[tuple[Job, Any]]:
        """Hand queued jobs to idle actors, wait up to ``timeout`` s for results; returns finished jobs."""
        self._dispatch()
        if not self.running:
            return []
        refs = list(self.running)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        finished = []
        for ref in ready:
            rank, job = self.running.pop(ref)
            try:
                finished.append((job, ray.get(ref, timeout=self.timeout_s)))
            except RayActorError as err:
                self.queue.appendleft(job)
                self.replace(rank, err)
            except RayTaskError as err:
                raise WorkerFailed(
                    f"{self.kind} worker {rank} failed on job {job.id} ({job.method}): {err}"
                ) from err
        self._check_deadlines()
        self._dispatch()
        return finished

    def broadcast(
        self, method: str, *args: Any, timeout: float, setting: str = "runtime.ray.sync_timeout_s"
    ) -> None:
        """Call ``method`` on every actor and wait for all; a dead actor is replaced (``on_start`` covers it).
        Past ``timeout`` (the value of ``setting``) it raises ``WeightSyncTimeout`` for ``load_weights``, else
        ``RemoteTimeout``, naming the late workers."""
        refs = {getattr(actor, method).remote(*args): rank for rank, actor in enumerate(self.actors)}
        ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        if late:
            names = ", ".join(f"{self.kind} worker {refs[r]}" for r in late)
            error = WeightSyncTimeout if method == "load_weights" else RemoteTimeout
            raise error(
                f"{names} did not finish {method} within {timeout:g}s ({setting}); the worker is hung, "
                "overloaded or still starting, or the object store cannot move its arguments in time"
            )
        for ref in ready:
            try:
                ray.get(ref, timeout=timeout)
            except RayActorError as err:
                self.replace(refs[ref], err)

    def replace(self, rank: int, cause: BaseException) -> None:
        """Start a new actor in place of ``rank`` and re-queue the jobs it held."""
        self.restarts[rank] += 1
        self.replaced.append(WorkerRestart(self.kind, rank, _first_line(cause)))
        if self.restarts[rank] > self.max_restarts:
            raise WorkerFailed(
                f"{self.kind} worker {rank} died {self.restarts[rank]} times (runtime.ray.max_restarts="
                f"{self.max_restarts}); last cause: {cause}"
            )
        for ref, (r, job) in list(self.running.items()):
            if r == rank:
                del self.running[ref]
                self.queue.appendleft(job)
        ray.kill(self.actors[rank], no_restart=True)
        self.actors[rank] = self.make(rank)
        if self.on_start is not None:
            self.on_start(rank, self.actors[rank])

    def _dispatch(self) -> None:
        busy = {rank for rank, _ in self.running.values()}
        for rank, actor in enumerate(self.actors):
            if rank in busy or not self.queue:
                continue
            job = self.queue.popleft()
            job.started = time.monotonic()
            self.running[getattr(actor, job.method).remote(*job.args)] = (rank, job)

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for rank, job in self.running.values():
            if now - job.started > self.timeout_s:
                raise RemoteTimeout(
                    f"{self.kind} worker {rank}: job {job.id} ({job.method}) ran over {self.timeout_s:g}s "
                    "(runtime.ray.task_timeout_s)"
                )

    def close(self, release_s: float = 10.0) -> None:
        """Ask each actor to release what it holds (an engine's worker processes), for at most ``release_s``
        seconds in all, then kill the actors."""
        pending = [actor.close.remote() for actor in self.actors if hasattr(actor, "close")]
        if pending:
            ray.wait(pending, num_returns=len(pending), timeout=release_s)
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except (RayActorError, GetTimeoutError, ValueError):
                continue
        self.running.clear()
        self.queue.clear()


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200] if lines else ''}"
