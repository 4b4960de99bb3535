"""The fsdp2 learner group: ``train.learners`` processes, each a ``ShardedLearner`` rank, driven from the run's
process through one pipe per rank, behind the ``Learner`` contract (the loop does not know it is sharded).

Each call goes to every rank (they run the same collectives) and every wait has a limit: the group's start
(``train.fsdp.start_timeout_s``) and each command (``train.fsdp.timeout_s``). A rank that dies, fails or does not
answer in time is a named error (``LearnerDied``, ``LearnerFailed``, ``LearnerTimeout``) and the whole group is
stopped, so a lost rank never leaves the others waiting in a collective.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from verity.algo.config import AlgoConfig
from verity.rollout.sync_check import Probe
from verity.schema import ConfigError
from verity.train.batching import Batch
from verity.train.checkpoint import ShardedPart
from verity.train.config import TrainConfig
from verity.train.export import save_streamed


class LearnerGroupError(RuntimeError):
    """The learner group cannot go on; every rank has been stopped."""


class LearnerDied(LearnerGroupError):
    """A learner process exited."""


class LearnerFailed(LearnerGroupError):
    """A learner process raised an error (its traceback is in the message)."""


class LearnerTimeout(LearnerGroupError):
    """A learner process did not answer within its time limit."""


@dataclass(frozen=True)
class GroupSpec:
    """What every rank builds its learner from (picklable: it crosses to spawned processes)."""

    model_path: str
    dtype: str
    device: str  # "cpu" or "cuda"
    train: TrainConfig
    algo: AlgoConfig
    temperature: float
    seed: int
    threads: int
    reference: bool = False  # each rank also holds a frozen sharded copy of the initial policy (KL)


class ReferenceHandle(torch.nn.Module):
    """Stands for the reference policy the ranks hold sharded: ``logprobs(batch, group.reference)`` asks for its
    log-probs, as ``logprobs(batch, ref_model)`` does of the single learner."""


class LearnerGroup:
    """``Learner`` over ``spec.train.learners`` FSDP2 ranks; ``weights()`` streams gathered buckets from rank 0."""

    def __init__(self, spec: GroupSpec) -> None:
        self.spec = spec
        self.version = 0
        self.reference = ReferenceHandle() if spec.reference else None
        self.timeout = spec.train.fsdp.timeout_s
        context = mp.get_context("spawn")
        port = free_port()
        world = spec.train.learners
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for rank in range(world):
            mine, theirs = context.Pipe()
            proc = context.Process(
                target=_rank_main, args=(rank, world, port, theirs, spec), daemon=True, name=f"learner-{rank}"
            )
            proc.start()
            theirs.close()
            self._conns.append(mine)
            self._procs.append(proc)
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
            while self._conns and not finished:
                finished = self._receive(0, self.timeout, "train.fsdp.timeout_s")[0] == "ok"
            for rank in range(1, len(self._conns)):
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
        """Stop every rank: ask politely, then terminate what is left."""
        for conn in self._conns:
            with contextlib.suppress(OSError):  # a rank that is gone already
                conn.send(("close", ()))
        deadline = time.monotonic() + 10.0
        for proc in self._procs:
            proc.join(max(deadline - time.monotonic(), 0.1))
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []

    def _call(self, command: str, *args: Any) -> list[Any]:
        self._send(command, *args)
        return self._gather(self.timeout, "train.fsdp.timeout_s")

    def _send(self, command: str, *args: Any) -> None:
        if not self._conns:
            raise LearnerGroupError("the learner group is closed")
        for rank, conn in enumerate(self._conns):
            try:
                conn.send((command, args))
            except (BrokenPipeError, OSError):
                self._fail(LearnerDied(f"learner rank {rank} is gone ({self._exit(rank)}) before {command!r}"))

    def _gather(self, timeout: float, setting: str) -> list[Any]:
        return [self._receive(rank, timeout, setting)[1] for rank in range(len(self._conns))]

    def _receive(self, rank: int, timeout: float, setting: str) -> tuple[str, Any]:
        """The next message of ``rank``; while waiting, every rank's process is watched."""
        deadline = time.monotonic() + timeout
        conn = self._conns[rank]
        while not conn.poll(min(1.0, max(deadline - time.monotonic(), 0.0))):
            self._check_alive()
            if time.monotonic() >= deadline:
                self._fail(
                    LearnerTimeout(
                        f"learner rank {rank} gave no answer within {timeout:.0f} s; raise {setting} if the model "
                        "is large or the machine busy"
                    )
                )
        try:
            kind, value = conn.recv()
        except EOFError:
            self._fail(LearnerDied(f"learner rank {rank} closed its pipe ({self._exit(rank)})"))
        if kind == "error":
            # A rank that lost its peer in a collective fails too: name the dead one when there is one.
            self._check_alive(grace=2.0)
            self._fail(LearnerFailed(f"learner rank {rank} failed:\n{value}"))
        return kind, value

    def _check_alive(self, grace: float = 0.0) -> None:
        """Fail with ``LearnerDied`` if a rank's process has exited (waiting up to ``grace`` s for one to)."""
        deadline = time.monotonic() + grace
        while True:
            for rank, proc in enumerate(self._procs):
                if not proc.is_alive():
                    self._fail(LearnerDied(f"learner rank {rank} died ({self._exit(rank)}); see its output"))
            if time.monotonic() >= deadline:
                return
            time.sleep(0.05)

    def _exit(self, rank: int) -> str:
        code = self._procs[rank].exitcode
        if code is None:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

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


def _rank_main(rank: int, world: int, port: int, conn: Connection, spec: GroupSpec) -> None:
    """One rank: join the group, build the sharded learner, then serve the driver's commands until ``close``.
    Ctrl-C reaches the driver, which stops the run between steps and then the ranks; a rank whose driver is gone
    (its pipe closed) exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        learner = _start_rank(rank, world, port, spec)
        conn.send(("ok", None))
        while True:
            command, args = conn.recv()
            if command == "close":
                break
            conn.send(("ok", _serve(learner, conn, command, args)))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the driver is gone
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _start_rank(rank: int, world: int, port: int, spec: GroupSpec) -> Any:
    from transformers.utils import logging as hf_logging

    from verity.algo.objective import PolicyObjective
    from verity.models import load_policy
    from verity.train.sharded import ShardedLearner, process_group_backend

    hf_logging.disable_progress_bar()  # one loading bar per rank says nothing
    torch.set_num_threads(spec.threads)
    device = torch.device(f"cuda:{rank}" if spec.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=spec.train.fsdp.timeout_s)
    address = f"tcp://127.0.0.1:{port}"
    backend = process_group_backend(device.type)
    dist.init_process_group(backend, init_method=address, rank=rank, world_size=world, timeout=timeout)
    torch.manual_seed(spec.seed)
    place = "cpu" if spec.train.fsdp.cpu_offload else str(device)
    model, _ = load_policy(spec.model_path, spec.dtype, place)
    reference = load_policy(spec.model_path, spec.dtype, place)[0] if spec.reference else None
    objective = PolicyObjective(spec.algo)
    return ShardedLearner(model, spec.train, objective, spec.temperature, spec.seed, device, reference)


def _serve(learner: Any, conn: Connection, command: str, args: tuple) -> Any:
    if command == "step":
        batch, loss_kwargs = args
        return learner.step(batch, **loss_kwargs)
    if command == "sft_step":
        return learner.sft_step(*args)
    if command == "logprobs":
        return learner.logprob_share(*args)
    if command == "probe":
        return learner.probe_logprobs(*args)
    if command == "weights":
        _stream_weights(learner, conn, args[0])
        return None
    if command == "save":
        return learner.save_sharded(*args)
    if command == "load":
        return learner.load_sharded(*args)
    raise ValueError(f"unknown learner command {command!r}")


def _stream_weights(learner: Any, conn: Connection, bucket_bytes: int) -> None:
    """Every rank gathers each tensor (a collective); rank 0 sends them on in buckets of ``bucket_bytes``."""
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in learner.full_weights():
        if learner.rank != 0:
            continue
        bucket.append((name, tensor))
        size += tensor.numel() * tensor.element_size()
        if size >= bucket_bytes:
            conn.send(("bucket", bucket))
            bucket, size = [], 0
    if bucket:
        conn.send(("bucket", bucket))


def group_spec(cfg: Any, model_path: str, device: str) -> GroupSpec:
    """The group's spec from a run's ``Config``; a setting the group does not support is a ``ConfigError``."""
    from verity.algo.objective import advantage_inputs

    unsupported = {
        "runtime.kind=ray (its learner stays in the driver; use runtime.kind=local)": cfg.runtime.kind != "local",
        "a critic (algo.advantage declares values, e.g. gae; choose another estimator)": "values"
        in advantage_inputs(cfg.algo),
        "LoRA (model.lora; adapters already make the trained state small: remove model.lora)": cfg.model.lora
        is not None,
        "train.fsdp.cpu_offload without a GPU (set it false on CPU)": cfg.train.fsdp.cpu_offload
        and not device.startswith("cuda"),
    }
    for what, present in unsupported.items():
        if present:
            raise ConfigError(f"train.strategy=fsdp2 does not support {what}; or use train.strategy=single")
    learners = cfg.train.learners
    if device.startswith("cuda") and learners > torch.cuda.device_count():
        raise ConfigError(
            f"train.learners={learners} but {torch.cuda.device_count()} GPUs are visible: one learner per GPU"
        )
    return GroupSpec(
        model_path,
        cfg.model.dtype,
        "cuda" if device.startswith("cuda") else "cpu",
        cfg.train,
        cfg.algo,
        cfg.rollout.temperature,
        cfg.seed,
        cfg.runtime.threads or max(1, (os.cpu_count() or 1) // learners),
        reference=cfg.algo.kl_coef > 0 or cfg.algo.kl_target is not None,
    )
