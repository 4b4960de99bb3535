"""The fsdp2 learner group: ``train.learners`` processes, each a ``ShardedLearner`` rank, driven from the run's
process behind the ``Learner`` contract (the loop does not know it is sharded). A ``Transport`` carries the
commands: one pipe per spawned rank here (``PipeTransport``), or Ray actor calls
(``verity/runtime/ray/learners.py``); the ranks serve them with ``verity.train.fsdp.rank.serve_rank``.

Each call goes to every rank (they run the same collectives) and every wait has a limit: the group's start
(``train.fsdp.start_timeout_s``) and each command (``train.fsdp.timeout_s``). A rank that dies, fails or does not
answer in time is a named error (``LearnerDied``, ``LearnerFailed``, ``LearnerTimeout``) and the whole group is
stopped, so a lost rank never leaves the others waiting in a collective.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn, Protocol

import torch
import torch.multiprocessing as mp

from verity.algo.objective import advantage_inputs
from verity.rollout.sync_check import Probe
from verity.schema import ConfigError
from verity.train.batching import Batch
from verity.train.checkpoint import ShardedPart
from verity.train.export import save_streamed
from verity.train.fsdp.rank import GroupSpec, serve_rank


class LearnerGroupError(RuntimeError):
    """The learner group cannot go on; every rank has been stopped."""


class LearnerDied(LearnerGroupError):
    """A learner process exited."""


class LearnerFailed(LearnerGroupError):
    """A learner process raised an error (its traceback is in the message)."""


class LearnerTimeout(LearnerGroupError):
    """A learner process did not answer within its time limit."""


class ReferenceHandle(torch.nn.Module):
    """Stands for the reference policy the ranks hold sharded: ``logprobs(batch, group.reference)`` asks for its
    log-probs, as ``logprobs(batch, ref_model)`` does of the single learner."""


class Transport(Protocol):
    """How the group reaches its ranks: ``send`` one command to every rank (``OSError`` when one is gone,
    ``TimeoutError`` when one does not take it in time), ``poll``/``recv`` one rank's next message (``recv``
    raises ``EOFError`` when the rank is gone), ``alive``/``exit`` watch and describe a rank (``alive`` is False
    only for a rank that died without a last message: killed or crashed), ``close`` ends
    them all. The rank side serves the same commands over a connection with ``send``/``recv``
    (``serve_rank``)."""

    def send(self, message: tuple[str, tuple], timeout: float) -> None: ...

    def poll(self, rank: int, timeout: float) -> bool: ...

    def recv(self, rank: int) -> tuple[str, Any]: ...

    def alive(self, rank: int) -> bool: ...

    def exit(self, rank: int) -> str: ...

    def close(self) -> None: ...


class PipeTransport:
    """The ranks as spawned processes on this machine, one pipe each; rendezvous on a free local port."""

    def __init__(self, spec: GroupSpec) -> None:
        context = mp.get_context("spawn")
        address = f"127.0.0.1:{free_port()}"
        world = spec.train.learners
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for rank in range(world):
            mine, theirs = context.Pipe()
            proc = context.Process(
                target=serve_rank,
                args=(rank, world, address, theirs, spec, rank),
                daemon=True,
                name=f"learner-{rank}",
            )
            proc.start()
            theirs.close()
            self.conns.append(mine)
            self.procs.append(proc)

    def send(self, message: tuple[str, tuple], timeout: float) -> None:
        for rank, conn in enumerate(self.conns):
            try:
                conn.send(message)
            except OSError as error:
                raise OSError(f"learner rank {rank} is gone ({self.exit(rank)})") from error

    def poll(self, rank: int, timeout: float) -> bool:
        return self.conns[rank].poll(timeout)

    def recv(self, rank: int) -> tuple[str, Any]:
        return self.conns[rank].recv()

    def alive(self, rank: int) -> bool:
        # A rank that ends by itself (exit code 0) has sent its last message, an error, which stays readable: it
        # failed, it did not die.
        return self.procs[rank].is_alive() or self.procs[rank].exitcode == 0

    def exit(self, rank: int) -> str:
        code = self.procs[rank].exitcode
        if code is None:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):  # a rank that is gone already
                conn.send(("close", ()))
        deadline = time.monotonic() + 10.0
        for proc in self.procs:
            proc.join(max(deadline - time.monotonic(), 0.1))
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)
        for conn in self.conns:
            conn.close()


class LearnerGroup:
    """``Learner`` over ``spec.train.learners`` FSDP2 ranks; ``weights()`` streams gathered buckets from rank 0."""

    def __init__(self, spec: GroupSpec, transport: Transport | None = None) -> None:
        self.spec = spec
        self.version = 0
        self.reference = ReferenceHandle() if spec.reference else None
        self.timeout = spec.train.fsdp.timeout_s
        self.transport: Transport | None = transport or PipeTransport(spec)
        self._gather(spec.train.fsdp.start_timeout_s, "train.fsdp.start_timeout_s")

    def step(self, batch: Batch, **loss_kwargs: float) -> dict[str, float]:
        metrics = self._call("step", batch, loss_kwargs)[0]
        self.version += 1
        return metrics

    def sft_step(self, batch: Batch, lr_scale: float = 1.0) -> float:
        return self._call("sft_step", batch, lr_scale)[0]

    @torch.no_grad()
    def logprobs(self, batch: Batch, model: torch.nn.Module | None = None) -> torch.Tensor:
        """Teacher-forced log-probs (B, T) under the policy, or under the reference when ``model`` is the group's
        ``reference``; each rank computes its share of the rows."""
        if model is not None and (self.reference is None or model is not self.reference):
            raise LearnerGroupError(
                "the fsdp2 learner group computes its policy's and its reference's log-probs only"
            )
        out = torch.zeros_like(batch.old_logprobs)
        for rows, values in self._call("logprobs", batch, model is not None):
            out[rows, : values.shape[1]] = values.to(out.dtype)
        return out

    def probe_logprobs(self, probe: Probe) -> list[list[float]]:
        """The policy's log-probs of a weight-sync probe, which the engine's copy must match after a sync."""
        return self._call("probe", probe)[0]

    def weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Every weight as ``(name, tensor)``: the ranks gather one parameter at a time and rank 0 sends them in
        buckets of ``train.fsdp.bucket_mb``, read as they are consumed (no rank holds a second full model)."""
        self._send("weights", int(self.spec.train.fsdp.bucket_mb * 2**20))
        finished = False
        try:
            while not finished:
                kind, value = self._receive(0, self.timeout, "train.fsdp.timeout_s")
                finished = kind == "ok"
                if not finished:
                    yield from value
        finally:
            # A reader that stopped early: drain rank 0 so the pipe stays in step (unless the group has failed).
            while self.transport is not None and not finished:
                finished = self._receive(0, self.timeout, "train.fsdp.timeout_s")[0] == "ok"
            for rank in range(1, self.spec.train.learners):
                self._receive(rank, self.timeout, "train.fsdp.timeout_s")

    def state_dict(self) -> Any:
        """A checkpoint part that writes itself: every rank's shards of the model and optimizer (DCP) go into the
        checkpoint's directory, the replicated rest (schedule, random state, version) into its ``meta``."""
        return _ShardedState(self)

    def load_state_dict(self, state: ShardedPart) -> None:
        if not isinstance(state, ShardedPart) or state.directory is None:
            raise LearnerGroupError(
                "this checkpoint holds a single learner's state; resume it with train.strategy=single"
            )
        self._call("load", state.directory, state.meta)
        self.version = state.meta["version"]

    def save_model(self, path: Path, tokenizer: Any, lora_save: str = "merged") -> None:
        """The policy in Hugging Face format (safetensors shards, config, tokenizer), written from the weight
        stream one bucket at a time."""
        save_streamed(self.weights(), path, self.spec.model_path, tokenizer, self.spec.train.fsdp.bucket_mb)

    def close(self) -> None:
        """Stop every rank (the transport asks politely, then ends what is left)."""
        if self.transport is not None:
            transport, self.transport = self.transport, None
            transport.close()

    def _call(self, command: str, *args: Any) -> list[Any]:
        self._send(command, *args)
        return self._gather(self.timeout, "train.fsdp.timeout_s")

    def _send(self, command: str, *args: Any) -> None:
        if self.transport is None:
            raise LearnerGroupError("the learner group is closed")
        try:
            self.transport.send((command, args), self.timeout)
        except TimeoutError as error:
            self._fail(
                LearnerTimeout(f"{error} before {command!r}; raise train.fsdp.timeout_s if the machine is busy")
            )
        except (BrokenPipeError, OSError) as error:
            self._fail(LearnerDied(f"{error} before {command!r}"))

    def _gather(self, timeout: float, setting: str) -> list[Any]:
        return [self._receive(rank, timeout, setting)[1] for rank in range(self.spec.train.learners)]

    def _receive(self, rank: int, timeout: float, setting: str) -> tuple[str, Any]:
        """The next message of ``rank``; while waiting, every rank is watched."""
        if self.transport is None:
            raise LearnerGroupError("the learner group is closed")
        deadline = time.monotonic() + timeout
        while not self.transport.poll(rank, min(1.0, max(deadline - time.monotonic(), 0.0))):
            self._check_alive()
            if time.monotonic() >= deadline:
                self._fail(
                    LearnerTimeout(
                        f"learner rank {rank} gave no answer within {timeout:.0f} s; raise {setting} if the model "
                        "is large or the machine busy"
                    )
                )
        try:
            kind, value = self.transport.recv(rank)
        except EOFError:
            self._fail(LearnerDied(f"learner rank {rank} closed its connection ({self._exit(rank)})"))
        if kind == "error":
            # A rank that lost its peer in a collective fails too: name the dead one when there is one.
            self._check_alive(grace=2.0)
            self._fail(LearnerFailed(f"learner rank {rank} failed:\n{value}"))
        return kind, value

    def _check_alive(self, grace: float = 0.0) -> None:
        """Fail with ``LearnerDied`` if a rank has exited (waiting up to ``grace`` s for one to)."""
        deadline = time.monotonic() + grace
        while self.transport is not None:
            for rank in range(self.spec.train.learners):
                if not self.transport.alive(rank):
                    self._fail(LearnerDied(f"learner rank {rank} died ({self._exit(rank)}); see its output"))
            if time.monotonic() >= deadline:
                return
            time.sleep(0.05)

    def _exit(self, rank: int) -> str:
        return self.transport.exit(rank) if self.transport is not None else "closed"

    def _fail(self, error: LearnerGroupError) -> NoReturn:
        self.close()
        raise error


class _ShardedState:
    """The learner group's part of a checkpoint: each rank writes its shards into the checkpoint's directory."""

    def __init__(self, group: LearnerGroup) -> None:
        self.group = group

    def save_into(self, directory: Path) -> dict[str, Any]:
        return self.group._call("save", directory)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_spec(cfg: Any, model_path: str, device: str, threads: int) -> GroupSpec:
    """The group's spec from a run's ``Config``, its ranks on ``device`` with ``threads`` torch threads each; a
    setting the group does not support is a ``ConfigError``."""

    unsupported = {
        "LoRA (model.lora; adapters already make the trained state small: remove model.lora)": cfg.model.lora
        is not None,
        "train.fsdp.cpu_offload without a GPU (set it false on CPU)": cfg.train.fsdp.cpu_offload
        and not device.startswith("cuda"),
    }
    for what, present in unsupported.items():
        if present:
            raise ConfigError(f"train.strategy=fsdp2 does not support {what}; or use train.strategy=single")
    return GroupSpec(
        model_path,
        cfg.model.dtype,
        "cuda" if device.startswith("cuda") else "cpu",
        cfg.train,
        cfg.algo,
        cfg.rollout.temperature,
        cfg.seed,
        threads,
        reference=cfg.algo.kl_coef > 0 or cfg.algo.kl_target is not None,
        critic="values" in advantage_inputs(cfg.algo),
    )


def spawned_placement(cfg: Any, device: str) -> tuple[str, int]:
    """Where the local runtime's ranks run: the driver's device, and the machine's cores shared out among them
    unless ``runtime.threads`` says otherwise; one GPU per rank."""
    learners = cfg.train.learners
    if device.startswith("cuda") and learners > torch.cuda.device_count():
        raise ConfigError(
            f"train.learners={learners} but {torch.cuda.device_count()} GPUs are visible: one learner per GPU"
        )
    return device, cfg.runtime.threads or max(1, (os.cpu_count() or 1) // learners)


def spawn_group(cfg: Any, model_path: str, device: str) -> LearnerGroup:
    """The local runtime's learner group: ``train.learners`` spawned processes (``spawned_placement``)."""
    return LearnerGroup(group_spec(cfg, model_path, *spawned_placement(cfg, device)))
