"""Faults injected into a running Ray runtime, for the recovery tests (imported by the tests and by
``chaos_driver.py`` in a ``verity train`` subprocess)."""

from __future__ import annotations

import ray

from verity.runtime.ray.pool import ActorWorkers


def kill_when_busy(workers: ActorWorkers) -> None:
    """Kill actor 0 the next time it is handed a job, so that the job is in flight when it dies."""
    dispatch = workers._dispatch

    def dispatch_then_kill() -> None:
        dispatch()
        if any(rank == 0 for rank, _ in workers.running.values()):
            ray.kill(workers.actors[0], no_restart=True)
            workers._dispatch = dispatch  # type: ignore[method-assign]

    workers._dispatch = dispatch_then_kill  # type: ignore[method-assign]
