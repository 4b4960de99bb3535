"""The fsdp2 learner group on Ray: each rank is an actor placed with ``runtime.ray.learner_cpus`` /
``learner_gpus``, serving the same commands as a spawned rank (``verity.train.fsdp.rank.serve_rank``) behind the
same ``LearnerGroup``; only the transport differs (actor method calls instead of a pipe).

Rendezvous: rank 0's actor picks a free port on its node and the others join ``node_ip:port`` (gloo on CPU, NCCL
on GPU). Every wait has a limit (``train.fsdp.start_timeout_s``, ``train.fsdp.timeout_s``) and a dead actor is
``LearnerDied``.
"""

from __future__ import annotations

import queue
import socket
import threading
from typing import Any, NoReturn

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from verity.runtime.ray.config import RayConfig
from verity.runtime.ray.setup import check_resources, init_ray
from verity.train.fsdp.group import LearnerDied, LearnerGroup, LearnerGroupError, LearnerTimeout, group_spec
from verity.train.fsdp.rank import GroupSpec, serve_rank


class LearnerActor:
    """One rank: ``start`` runs ``serve_rank`` on a thread whose connection is two queues; ``put`` hands it a
    command, ``take`` waits for its next message. The outbox holds two messages, so a weight stream waits for the
    driver to read it (no second full model piles up)."""

    def __init__(self) -> None:
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue(maxsize=2)

    def address(self) -> str:
        """``node_ip:port`` with a port free on this node, for the group's rendezvous."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return f"{ray.util.get_node_ip_address()}:{port}"

    def start(self, rank: int, world: int, address: str, spec: GroupSpec) -> None:
        # Ray shows the actor the GPU it requested as device 0.
        args = (rank, world, address, _QueueConnection(self.inbox, self.outbox), spec, 0)
        threading.Thread(target=serve_rank, args=args, daemon=True, name=f"learner-{rank}").start()

    def put(self, message: tuple[str, tuple]) -> None:
        self.inbox.put(message)

    def take(self) -> tuple[str, Any]:
        return self.outbox.get()


class _QueueConnection:
    def __init__(self, inbox: queue.Queue, outbox: queue.Queue) -> None:
        self.inbox, self.outbox = inbox, outbox

    def send(self, message: Any) -> None:
        self.outbox.put(message)

    def recv(self) -> Any:
        return self.inbox.get()


class RayTransport:
    """The group's ``Transport`` over learner actors. Each rank has at most one ``take`` in flight; its result
    is the rank's next message, and an actor that dies fails it, which is how a death is seen."""

    def __init__(self, spec: GroupSpec, rc: RayConfig) -> None:
        world = spec.train.learners
        actor = ray.remote(LearnerActor).options(
            num_cpus=rc.learner_cpus, num_gpus=rc.learner_gpus, max_restarts=0, max_concurrency=4
        )
        self.actors = [actor.remote() for _ in range(world)]
        self._pending: list[Any] = [None] * world
        self._dead: list[str | None] = [None] * world
        limit = spec.train.fsdp.start_timeout_s
        try:
            address = ray.get(self.actors[0].address.remote(), timeout=limit)
            ray.get([a.start.remote(r, world, address, spec) for r, a in enumerate(self.actors)], timeout=limit)
        except GetTimeoutError:
            self.close()
            raise LearnerTimeout(
                f"the learner actors did not start within {limit:.0f} s (train.fsdp.start_timeout_s)"
            ) from None
        except RayActorError as error:
            self.close()
            raise LearnerDied(f"a learner actor died while starting: {_first_line(error)}") from None

    def send(self, message: tuple[str, tuple], timeout: float) -> None:
        # One call at a time per actor, each waited for: the commands arrive in order.
        refs = [actor.put.remote(message) for actor in self.actors]
        for rank, ref in enumerate(refs):
            try:
                ray.get(ref, timeout=timeout)
            except GetTimeoutError:
                raise TimeoutError(f"learner rank {rank} did not take a command within {timeout:.0f} s") from None
            except RayActorError as error:
                self._dead[rank] = _first_line(error)
                raise OSError(f"learner rank {rank} is gone ({self.exit(rank)})") from None

    def poll(self, rank: int, timeout: float) -> bool:
        ready, _ = ray.wait([self._take(rank)], timeout=timeout)
        return bool(ready)

    def recv(self, rank: int) -> tuple[str, Any]:
        ref, self._pending[rank] = self._take(rank), None
        try:
            return ray.get(ref)
        except RayActorError as error:
            self._dead[rank] = _first_line(error)
            raise EOFError(self._dead[rank]) from None

    def alive(self, rank: int) -> bool:
        ref = self._take(rank)
        if self._dead[rank] is None and ray.wait([ref], timeout=0)[0]:
            try:
                ray.get(ref)  # a message, kept for recv; or the actor's death
            except RayActorError as error:
                self._dead[rank] = _first_line(error)
        return self._dead[rank] is None

    def exit(self, rank: int) -> str:
        return "still running" if self._dead[rank] is None else f"its actor died: {self._dead[rank]}"

    def close(self) -> None:
        if ray.is_initialized():
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
        self.actors = []

    def _take(self, rank: int) -> Any:
        if self._pending[rank] is None:
            self._pending[rank] = self.actors[rank].take.remote()
        return self._pending[rank]


class RayLearnerGroup(LearnerGroup):
    """The learner group with actor ranks; it joins or starts Ray (``runtime.ray``) and, when it started a local
    cluster, shuts it down on ``close`` (after the runtime's actors: the run closes the runtime first)."""

    def __init__(self, spec: GroupSpec, rc: RayConfig) -> None:
        self._started_ray = init_ray(rc)
        try:
            check_resources(rc, spec.train.learners)
            super().__init__(spec, RayTransport(spec, rc))
        except BaseException:
            self._shutdown()
            raise

    def close(self) -> None:
        super().close()
        self._shutdown()

    def _fail(self, error: LearnerGroupError) -> NoReturn:
        # Stop the ranks but leave Ray up: the run closes the runtime's actors, then this group (and Ray).
        LearnerGroup.close(self)
        raise error

    def _shutdown(self) -> None:
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(error).__name__


def ray_placement(cfg: Any) -> tuple[str, int]:
    """Where the Ray runtime's ranks run: actors on the devices they request (``runtime.ray.learner_gpus``; not
    the driver's, and no check of this machine's GPU count), with ``runtime.threads``, ``runtime.ray.threads`` or
    their CPU request as torch threads."""
    rc = cfg.runtime.ray
    threads = cfg.runtime.threads or rc.threads or max(1, int(rc.learner_cpus))
    return "cuda" if rc.learner_gpus > 0 else "cpu", threads


def ray_group(cfg: Any, model_path: str, device: str) -> RayLearnerGroup:
    """The Ray runtime's learner group: one actor per rank, placed by ``ray_placement``."""
    return RayLearnerGroup(group_spec(cfg, model_path, *ray_placement(cfg)), cfg.runtime.ray)
