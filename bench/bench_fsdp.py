"""The fsdp2 learner on this machine: step time with 1 and 2 ranks, training state and peak memory per rank, and
the memory chunked log-probs save.

    python3 -m bench.bench_fsdp [--steps 3] [--skip-logits]

Step time: the learner's ``step`` (one mini-batch, micro-batches of 4 rows) on a 24M-parameter Llama (vocabulary
32,000, 6 layers of width 384, tied embeddings) over 16 rows of 32-512 tokens, the first step not timed, each
configuration in fresh processes (gloo on CPU). State per rank: the bytes of the parameter shards and AdamW's
two moments a rank holds (its gradients equal its parameter shards during a step). Peak: the process's peak
resident memory (``ru_maxrss``), torch and transformers included.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import LlamaConfig, LlamaForCausalLM

from verity.algo.config import AlgoConfig
from verity.algo.objective import PolicyObjective
from verity.train.batching import Batch
from verity.train.config import TrainConfig
from verity.train.fsdp.group import free_port
from verity.train.learner import Learner

VOCAB = 32_000


def bench_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=6,
        num_key_value_heads=6,
        intermediate_size=1152,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def bench_batch(rows: int = 16) -> Batch:
    """Rows of 32-512 tokens (geometric spread, as reasoning completions vary), a 16-token prompt each."""
    generator = torch.Generator().manual_seed(0)
    lengths = (32 * 2 ** (torch.rand(rows, generator=generator) * 4)).long()
    width = int(lengths.max())
    attention = (torch.arange(width)[None] < lengths[:, None]).long()
    ids = torch.randint(0, VOCAB, (rows, width), generator=generator) * attention
    loss_mask = attention.float()
    loss_mask[:, :16] = 0
    advantages = torch.randn(rows, 1, generator=generator) * loss_mask
    return Batch(ids, attention, loss_mask, -5 * loss_mask, advantages)


def state_bytes(learner: Learner) -> dict[str, float]:
    """MB of the parameters and optimizer moments this process holds (local shards of DTensors)."""

    def local(t: torch.Tensor) -> torch.Tensor:
        return t.to_local() if hasattr(t, "to_local") else t

    params = sum(local(p).numel() * local(p).element_size() for p in learner.model.parameters())
    moments = sum(
        local(v).numel() * local(v).element_size()
        for state in learner.optimizer.state.values()
        for k, v in state.items()
        if k != "step" and isinstance(v, torch.Tensor)
    )
    return {"params_mb": params / 2**20, "optimizer_mb": moments / 2**20}


def measure(learner: Learner, steps: int) -> dict[str, Any]:
    batch = bench_batch()
    learner.step(batch)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        learner.step(batch)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"step_s": statistics.median(times), "peak_mb": peak, **state_bytes(learner)}
    if learner.device.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated(learner.device) / 2**20
    return out


def train_config(world: int, offload: bool = False) -> TrainConfig:
    strategy = "fsdp2" if world else "single"
    return TrainConfig(
        micro_batch_size=4,
        strategy=strategy,
        learners=max(world, 1),
        skip_zero_advantage=False,
        fsdp={"cpu_offload": offload},
    )


def single_process(steps: int, threads: int, device: str, queue: Any) -> None:
    torch.set_num_threads(threads)
    model = bench_model().to(device)
    learner = Learner(model, train_config(0), PolicyObjective(AlgoConfig()), 1.0, 0)
    queue.put(measure(learner, steps))


def rank_process(
    rank: int, world: int, port: int, steps: int, threads: int, device: str, offload: bool, queue: Any
) -> None:
    """One rank (gloo on CPU, NCCL and one GPU per rank on cuda) of a sharded learner, measured."""
    from verity.train.fsdp.sharded import ShardedLearner, process_group_backend

    torch.set_num_threads(threads)
    compute = torch.device(f"cuda:{rank}" if device == "cuda" else "cpu")
    if compute.type == "cuda":
        torch.cuda.set_device(compute)
    backend = process_group_backend(compute.type)
    address = f"tcp://127.0.0.1:{port}"
    dist.init_process_group(backend, init_method=address, rank=rank, world_size=world, timeout=timedelta(600))
    try:
        objective = PolicyObjective(AlgoConfig())
        # A CPU model: fully_shard moves the shards to the GPU, or keeps them in CPU memory with offload.
        learner = ShardedLearner(bench_model(), train_config(world, offload), objective, 1.0, 0, compute)
        queue.put({"rank": rank, **measure(learner, steps)})
    finally:
        dist.destroy_process_group()


def sharded_rows(
    device: str, worlds: list[int], steps: int, threads: int, offload: bool = False
) -> list[tuple[str, list[dict[str, Any]]]]:
    """Measured rows of the sharded learner with each rank count in ``worlds``."""
    rows = []
    for world in worlds:
        port = free_port()
        results = run(rank_process, world, lambda i, w=world, p=port: (i, w, p, steps, threads, device, offload))
        name = f"fsdp2, {world} rank{'s' if world > 1 else ''}" + (", CPU offload" if offload else "")
        rows.append((name, results))
    return rows


def print_table(rows: list[tuple[str, list[dict[str, Any]]]]) -> None:
    keys = [("step_s", 2), ("params_mb", 1), ("optimizer_mb", 1), ("peak_mb", 0)]
    header = "| learner | step s (median) | params MB / rank | AdamW moments MB / rank | peak RSS MB / rank |"
    if any("gpu_peak_mb" in r for _, results in rows for r in results):
        keys.append(("gpu_peak_mb", 0))
        header += " peak GPU MB / rank |"
    print(header)
    print("|---" * len(header.split("|")[1:-1]) + "|")
    for name, results in rows:
        cells = ["/".join(f"{r.get(key, float('nan')):.{digits}f}" for r in results) for key, digits in keys]
        print(f"| {name} | " + " | ".join(cells) + " |")


def run(
    target: Callable[..., None], count: int, args: Callable[[int], tuple], timeout: float = 1200
) -> list[dict[str, Any]]:
    """``count`` spawned processes of ``target(*args(i), queue)``; their results, in rank order."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    procs = [context.Process(target=target, args=(*args(i), queue)) for i in range(count)]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=timeout) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    return sorted(results, key=lambda r: r.get("rank", 0))


def logits_peak(chunk: int, device: str = "cpu") -> float:
    """Peak MB a forward and backward of log-probs and entropies adds over 4 x 512 tokens, vocabulary 128,256:
    resident memory on CPU, allocated GPU memory on cuda."""
    script = f"""
import json, resource, torch
from transformers import LlamaConfig, LlamaForCausalLM
from verity.model.modeling import token_logprobs
from verity.train.batching import Batch
torch.manual_seed(0)
config = LlamaConfig(vocab_size=128_256, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
    num_key_value_heads=2, intermediate_size=128, max_position_embeddings=512)
model = LlamaForCausalLM(config).to("{device}")
ids = torch.randint(0, 128_256, (4, 512), device="{device}"); mask = torch.ones_like(ids)
zeros = torch.zeros(ids.shape, device="{device}")
cuda = "{device}" == "cuda"
rss = lambda: next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) / 1024
before = torch.cuda.memory_allocated() / 2**20 if cuda else rss()
lp, ent = token_logprobs(model, Batch(ids, mask, mask.float(), zeros, zeros), 1.0, True, {chunk})
(lp.sum() + ent.sum()).backward()
usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else usage
print(json.dumps(peak - before))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def print_logits_peaks(device: str = "cpu") -> None:
    print(
        f"\nlog-probs + entropy, forward and backward, 4 x 512 tokens, vocabulary 128,256 ({device}, peak added):"
    )
    for chunk in (10**9, 1024, 256):
        label = "unchunked" if chunk == 10**9 else f"chunks of {chunk} positions"
        print(f"  {label}: {logits_peak(chunk, device):.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--skip-logits", action="store_true", help="leave out the chunked log-prob measurement")
    args = parser.parse_args()
    rows = [
        (
            f"single, {t} thread{'s' if t > 1 else ''}",
            run(single_process, 1, lambda i, t=t: (args.steps, t, "cpu")),
        )
        for t in (1, 2)
    ]
    print_table(rows + sharded_rows("cpu", [1, 2], args.steps, threads=1))
    if not args.skip_logits:
        print_logits_peaks()


if __name__ == "__main__":
    main()
