"""``verity train`` with faults injected at named points of a Ray run (the recovery tests run it as a driver):

    VERITY_FAULTS=rollout_actor@2,inflight@4 python chaos_driver.py train CONFIG --resume

Each fault is ``point@step`` (the training step, counted from the run's start, during which it strikes):

- ``rollout_actor@S``, ``reward_actor@S``: kill actor 0 of that pool when it is next handed a job in step S;
- ``inflight@S``: SIGKILL this driver in step S as soon as groups are generating;
- ``sync@S``: SIGKILL this driver during step S's weight sync, after the actors were sent the new weights;
- ``checkpoint@S``: SIGKILL this driver while it writes step S's checkpoint: the directory is in place, the
  ``latest`` pointer not yet moved to it;
- ``random@S``: SIGKILL this driver at a moment drawn from ``random.Random(S).uniform(0, 0.25)`` seconds after
  step S begins (in step S or one of the next few: generating, training, syncing, or writing samples, metrics or
  a checkpoint).
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ray_faults import kill_when_busy

from verity.runtime.ray import runtime as ray_runtime
from verity.runtime.ray.pool import ActorWorkers
from verity.train import checkpoint


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def parse(spec: str) -> dict[str, set[int]]:
    faults: dict[str, set[int]] = {}
    for fault in filter(None, spec.split(",")):
        point, _, at = fault.partition("@")
        faults.setdefault(point, set()).add(int(at))
    return faults


def step_of(runtime: ray_runtime.RayRuntime) -> int:
    """The step in progress: the engines hold the weights of the steps already trained."""
    return runtime.engine.version + 1


def install(faults: dict[str, set[int]]) -> None:
    rollout: Callable[..., Any] = ray_runtime.RayRuntime.rollout
    wait: Callable[..., Any] = ray_runtime.RayRuntime._wait
    broadcast: Callable[..., Any] = ActorWorkers.broadcast
    write_pointer: Callable[..., Any] = checkpoint._write_atomic
    timer_started = threading.Event()

    def faulty_rollout(self: ray_runtime.RayRuntime, *args: Any) -> Any:
        if step_of(self) in faults.get("rollout_actor", set()):
            kill_when_busy(self.rollout_workers)
        if step_of(self) in faults.get("reward_actor", set()):
            kill_when_busy(self.reward_workers)
        if step_of(self) in faults.get("random", set()) and not timer_started.is_set():
            timer_started.set()
            timer = threading.Timer(random.Random(step_of(self)).uniform(0, 0.25), die)
            timer.daemon = True
            timer.start()
        return rollout(self, *args)

    def faulty_wait(self: ray_runtime.RayRuntime, done: Any, what: str) -> None:
        if step_of(self) in faults.get("inflight", set()):
            deadline = time.monotonic() + 60
            while not self.rollout_workers.running and time.monotonic() < deadline:
                self._cond.wait(0.01)  # the pump hands the queued groups to the actors
            die()
        wait(self, done, what)

    def faulty_broadcast(self: ActorWorkers, method: str, *args: Any, **kwargs: Any) -> None:
        if method == "load_weights" and args[1] in faults.get("sync", set()):
            for actor in self.actors:
                actor.load_weights.remote(*args)
            die()
        broadcast(self, method, *args, **kwargs)

    def faulty_write_pointer(path: Any, text: str) -> None:
        if any(text == f"step_{s:07d}" for s in faults.get("checkpoint", set())):
            die()
        write_pointer(path, text)

    ray_runtime.RayRuntime.rollout = faulty_rollout  # type: ignore[method-assign]
    ray_runtime.RayRuntime._wait = faulty_wait  # type: ignore[method-assign]
    ActorWorkers.broadcast = faulty_broadcast  # type: ignore[method-assign]
    checkpoint._write_atomic = faulty_write_pointer


if __name__ == "__main__":
    install(parse(os.environ.get("VERITY_FAULTS", "")))
    from verity.cli.main import main

    sys.exit(main(sys.argv[1:]))
