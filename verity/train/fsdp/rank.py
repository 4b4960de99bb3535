"""One rank of the fsdp2 learner group, on whatever carries its commands (a pipe from a spawned process, or a Ray
actor's queues): join the group, build the ``ShardedLearner``, answer the driver's commands until ``close``."""

from __future__ import annotations

import signal
import threading
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from verity.algo.config import AlgoConfig
from verity.train.config import TrainConfig


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
    critic: bool = False  # each rank also holds its share of the critic (algo.critic, GAE)


def serve_rank(rank: int, world: int, address: str, conn: Any, spec: GroupSpec, device_index: int) -> None:
    """One rank: join the group at ``address`` (host:port of rank 0), build the sharded learner on
    ``cuda:device_index`` (GPU) or the CPU, then serve the driver's commands from ``conn`` until ``close``.
    Ctrl-C reaches the driver, which stops the run between steps and then the ranks; a rank whose driver is gone
    (its pipe closed) exits."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        learner = _start_rank(rank, world, address, spec, device_index)
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


def _start_rank(rank: int, world: int, address: str, spec: GroupSpec, device_index: int) -> Any:
    from transformers.utils import logging as hf_logging

    from verity.algo.objective import PolicyObjective
    from verity.model.loading import load_policy
    from verity.train.fsdp.sharded import ShardedLearner, process_group_backend

    hf_logging.disable_progress_bar()  # one loading bar per rank says nothing
    torch.set_num_threads(spec.threads)
    device = torch.device(f"cuda:{device_index}" if spec.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=spec.train.fsdp.timeout_s)
    backend = process_group_backend(device.type)
    dist.init_process_group(backend, init_method=f"tcp://{address}", rank=rank, world_size=world, timeout=timeout)
    torch.manual_seed(spec.seed)
    place = "cpu" if spec.train.fsdp.cpu_offload else str(device)
    model, _ = load_policy(spec.model_path, spec.dtype, place)
    reference = load_policy(spec.model_path, spec.dtype, place)[0] if spec.reference else None
    objective = PolicyObjective(spec.algo)
    learner = ShardedLearner(model, spec.train, objective, spec.temperature, spec.seed, device, reference)
    learner.critic = _build_critic(learner, spec, place) if spec.critic else None
    return learner


def _build_critic(learner: Any, spec: GroupSpec, place: str) -> Any:
    """This rank's share of the critic: a head on the sharded policy, or a separate copy of the initial policy."""
    from verity.model.loading import load_policy
    from verity.train.critic import build_critic
    from verity.train.fsdp.sharded_critic import ShardedCritic

    separate = load_policy(spec.model_path, spec.dtype, place)[0] if spec.algo.critic == "separate" else None
    critic = build_critic(spec.algo.critic, learner.model, separate)
    critic.head.to(place)
    return ShardedCritic(critic, learner, spec.algo.critic_lr, spec.algo.value_clip)


def _serve(learner: Any, conn: Any, command: str, args: tuple) -> Any:
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
    if command.startswith("critic_") and learner.critic is None:
        raise ValueError("this learner group holds no critic (algo.advantage declares no values)")
    if command == "critic_values":
        return learner.critic.value_share(*args)
    if command == "critic_fit":
        return learner.critic.fit(*args)
    if command == "critic_save":
        return learner.critic.save_sharded(*args)
    if command == "critic_load":
        return learner.critic.load_sharded(*args)
    raise ValueError(f"unknown learner command {command!r}")


def _stream_weights(learner: Any, conn: Any, bucket_bytes: int) -> None:
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
