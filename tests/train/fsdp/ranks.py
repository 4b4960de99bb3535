"""Running a function on a few local torch.distributed ranks (gloo, spawned processes) from a test."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_entry(
    rank: int, world: int, port: int, fn: Callable[..., dict[str, Any]], out: str, args: tuple
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(seconds=120)
    )
    try:
        result = fn(*args)
    finally:
        dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))


def run_ranks(fn: Callable[..., dict[str, Any]], world: int, out: Path, *args: Any, timeout: float = 240) -> list:
    """``fn(*args)`` on ``world`` gloo ranks; returns each rank's JSON result. A rank that fails or outlives
    ``timeout`` fails the test (every process is killed)."""
    context = mp.get_context("spawn")
    port = free_port()
    procs = [context.Process(target=_rank_entry, args=(r, world, port, fn, str(out), args)) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.join(max(deadline - time.monotonic(), 0.1))
        codes = [p.exitcode for p in procs]
        assert codes == [0] * world, f"ranks exited with {codes}"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(10)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]
