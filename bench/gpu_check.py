"""A short device check: a few RL steps of the quickstart and ~15M models on the best device, with throughput.

Builds the quickstart base model if it is missing, then prints the device, the measured matmul peak, rollout
tokens/s of the engine vs ``model.generate``, and seconds per RL step by phase (bf16 autocast on CUDA, SDPA
attention). When vllm imports, the same for ``rollout.engine: vllm`` (bf16 on CUDA): tokens/s against both
transformers paths, start-up, weight-sync time per MB, and RL steps with weights streamed to vLLM after each.
It also runs on CPU, where it is just a smaller version of the other benchmarks.

On CUDA it then checks the fsdp2 learner (``bench/bench_fsdp.py``) where a CPU cannot: NCCL, bf16 mixed
precision with fp32 gradient reduction, one GPU per rank (1 rank, and 2 when two GPUs are visible), CPU offload
of parameters and optimizer state (the GPU peak must fall), and chunked log-probs' GPU memory.

    python3 -m bench.gpu_check --steps 5
"""

from __future__ import annotations

import argparse
import importlib.util

import torch

from bench.bench_fsdp import print_logits_peaks, print_table, sharded_rows
from bench.bench_rollout import bench_model
from bench.bench_step import run_loop, summarize
from bench.common import MODELS, QUICKSTART, machine_note, matmul_peak, quickstart_config, set_threads
from verity.build import held_out_keys, resolve_device
from verity.cli.main import main as verity_cli
from verity.run.base import base_cache_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch threads on CPU (default: torch's choice)")
    args = parser.parse_args()
    set_threads(args.threads)
    device = resolve_device(args.device)
    quickstart = quickstart_config()
    if not (base_cache_dir(quickstart, held_out_keys(quickstart)) / "config.json").is_file():
        verity_cli(["init", QUICKSTART])
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    peak = matmul_peak(device=device)
    print(f"device {device} ({name}); {machine_note()}; fp32 matmul peak {peak / 1e12:.2f} TFLOP/s")
    print(f"bfloat16 matmul peak {matmul_peak(device=device, dtype=torch.bfloat16) / 1e12:.2f} TFLOP/s")
    for model in MODELS:
        bench_model(model, 8, 8, 64, repeats=2, peak=peak, device=device)
        # Every row trains: the random 15M model scores 0 everywhere, and skipping its rows would time no update.
        overrides = [f"runtime.device={device}", "train.skip_zero_advantage=false"]
        summarize(model, run_loop(model, args.steps, args.threads, overrides))
    if device.startswith("cuda"):
        sharded_check(args.steps)
    if importlib.util.find_spec("vllm") is None:
        print("vllm is not installed: no vLLM figures (pip install -e '.[vllm]')")
        return
    from bench.bench_vllm import bench_model as bench_vllm_model

    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    for model in MODELS:
        bench_vllm_model(model, repeats=2, device=device, dtype=dtype)
        overrides = [f"runtime.device={device}", "train.skip_zero_advantage=false", "rollout.engine=vllm"]
        summarize(f"{model} (rollout.engine=vllm)", run_loop(model, args.steps, args.threads, overrides))


def sharded_check(steps: int) -> None:
    """The fsdp2 learner's step on GPUs: per-rank state and GPU peak with 1 (and 2) ranks, then with offload."""
    worlds = [1, 2] if torch.cuda.device_count() >= 2 else [1]
    rows = sharded_rows("cuda", worlds, steps, threads=1)
    rows += sharded_rows("cuda", worlds[-1:], steps, threads=1, offload=True)
    print_table(rows)
    print_logits_peaks("cuda")


if __name__ == "__main__":
    main()
