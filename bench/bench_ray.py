"""Ray runtime: samples/s of whole RL steps, sync vs async, and the weight-sync time per MB.

The policy is a freshly initialised Llama over the character tokenizer: its next-token distribution is close to
uniform over 112 tokens, so each sampled token ends the completion with probability ~1/112 and completion
lengths are geometric, from 1 to ``--max-new-tokens`` (widely varying, as in long reasoning). Both modes run
the same loop (``rl_step``) with the same actors (``--workers`` rollout actors, one reward actor); the first
step of each mode is a warm-up and not timed. A sample is one completion trained on.

    python3 -m bench.bench_ray --workers 1 --steps 6
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from verity.build import build_parts
from verity.config import load_config
from verity.loop import rl_step
from verity.model.tokenizer import build_char_tokenizer


def prompt_task(seed: int, index: int) -> dict[str, Any]:
    return {"prompt": f"write {seed % 1000}:{index}", "answer": "7"}


def share_of_sevens(completion: str, **fields: Any) -> float:
    return completion.count("7") / len(completion) if completion else 0.0


def save_policy(path: Path, hidden: int, layers: int) -> None:
    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=3 * hidden,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


def settings(model: Path, out: Path, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": mode,
        "output_dir": str(out),
        "model": {"name": str(model), "dtype": "float32"},
        "data": {"tasks": [{"source": "generator", "name": "write", "function": "bench.bench_ray:prompt_task"}]},
        "rollout": {
            "prompts_per_step": args.prompts,
            "group_size": args.group,
            "max_new_tokens": args.max_new_tokens,
        },
        "reward": {"verifiers": ["bench.bench_ray:share_of_sevens"], "in_process": True},
        "algo": {"loss": "decoupled_ppo"},
        "train": {"lr": 1e-6, "micro_batch_size": 16},
        "runtime": {
            "kind": "ray",
            "device": "cpu",
            "threads": 1,
            "ray": {
                "mode": mode,
                "max_staleness": 1,
                "rollout_workers": args.workers,
                "rollout_cpus": 1.5 / args.workers,  # with the reward actor's 0.5: the 2 CPUs of the cluster
                "reward_cpus": 0.5,
                "threads": 1,
                "segment_tokens": args.segment,
                "items_per_task": args.items_per_task or max(1, args.prompts // args.workers),
            },
        },
    }


def samples_per_second(model: Path, out: Path, mode: str, args: argparse.Namespace) -> dict[str, float]:
    """Samples/s over steps 2..N, the completion lengths' std/mean, and the mean seconds per step spent waiting
    for rollouts and training."""
    parts = build_parts(load_config(settings(model, out, mode, args)), lambda message: None)
    try:
        rl_step(parts)
        start, samples, lengths, waits, trains = time.perf_counter(), 0, [], [], []
        for _ in range(args.steps - 1):
            metrics, rollouts = rl_step(parts)
            samples += len(rollouts)
            lengths += [len(r.completion.token_ids) for r in rollouts]
            waits.append(metrics["time/generate"])
            trains.append(metrics["time/train"])
        seconds = time.perf_counter() - start
    finally:
        parts.runtime.close()
    spread = torch.tensor(lengths, dtype=torch.float32)
    return {
        "rate": samples / seconds,
        "cv": float(spread.std() / spread.mean()),
        "wait": sum(waits) / len(waits),
        "train": sum(trains) / len(trains),
    }


def sync_seconds_per_mb(model: Path, out: Path, args: argparse.Namespace, repeats: int = 5) -> tuple[float, float]:
    parts = build_parts(load_config(settings(model, out, "sync", args)), lambda message: None)
    try:
        megabytes = sum(t.numel() * t.element_size() for t in parts.learner.weights().values()) / 2**20
        start = time.perf_counter()
        for _ in range(repeats):
            parts.runtime.sync(parts.learner)
        return (time.perf_counter() - start) / repeats / megabytes, megabytes
    finally:
        parts.runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1, help="rollout actors (the same in both modes)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--segment", type=int, default=32, help="async: tokens between weight checks")
    parser.add_argument(
        "--items-per-task",
        type=int,
        default=None,
        help="prompts per work unit, both modes (default: step / workers)",
    )
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="vbench") as tmp:
        model, out = Path(tmp) / "policy", Path(tmp) / "runs"
        save_policy(model, args.hidden, args.layers)
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            _temp_dir=str(Path(tmp) / "ray"),
            runtime_env={"env_vars": {"PYTHONPATH": os.getcwd()}},  # actors import this module's task by path
        )
        try:
            rates = {mode: samples_per_second(model, out, mode, args) for mode in ("sync", "async")}
            per_mb, megabytes = sync_seconds_per_mb(model, out, args)
        finally:
            ray.shutdown()
    for mode, r in rates.items():
        print(
            f"{mode:5s}: {r['rate']:7.1f} samples/s  (length std/mean {r['cv']:.2f}; per step: waiting for "
            f"rollouts {r['wait']:.2f}s, training {r['train']:.2f}s)"
        )
    print(
        f"async / sync: {rates['async']['rate'] / rates['sync']['rate']:.2f}x with {args.workers} rollout actor(s)"
    )
    print(f"weight sync: {1000 * per_mb:.1f} ms per MB ({megabytes:.1f} MB of weights, {args.workers} actor(s))")


if __name__ == "__main__":
    main()
