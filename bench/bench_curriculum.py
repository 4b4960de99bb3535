"""Sampling curricula on a two-task mix where one task is much harder: held-out accuracy per task after the same
wall-time budget of RL with uniform (natural-mix), task-balanced and hard-focus sampling.

The mix is sums of three 1-digit numbers ('easy': held-out sums reuse the same one-digit facts, so what RL
fixes carries over) and of two 2-digit numbers ('hard'), drawn 3:1 as a natural dataset would be. Each arm
starts from the same tiny base model (built once, cached under --cache) and trains until --seconds have passed.
Run from the repository root:

    python3 bench/bench_curriculum.py [--seconds 90] [--eval-items 100] [--cache /tmp/vcache]
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import torch

from verity.build import build_parts
from verity.config import Config, load_config
from verity.loop import rl_step, run_eval

ARMS: dict[str, dict[str, Any]] = {
    "uniform": {},
    "balanced": {"sampling": "balanced"},
    # A short uniform stage to estimate difficulty, then half of each batch revisits the hardest items with 16
    # rollouts each (DRIVE's second stage).
    "hard_focus": {
        "stages": [
            {"name": "explore", "steps": 5},
            {"name": "hard", "hard_focus": {"fraction": 0.5, "max_pass_rate": 0.5, "group_size": 16}},
        ]
    },
}


def sum_task(seed: int, index: int, min_digits: int, max_digits: int, terms: int = 2) -> dict[str, Any]:
    """'a + b (+ c) =' with terms of min_digits..max_digits digits; item ``index`` of stream ``seed``."""
    rng = random.Random(seed * 1_000_003 + index)
    values = []
    for _ in range(terms):
        digits = rng.randint(min_digits, max_digits)
        values.append(rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1))
    return {"prompt": " + ".join(map(str, values)) + " =", "answer": str(sum(values))}


def config(arm: dict[str, Any], cache: str, eval_items: int) -> Config:
    tasks = [
        {"source": "generator", "name": name, "function": "bench_curriculum:sum_task", "kwargs": kw, "weight": w}
        for name, kw, w in [
            ("easy", {"min_digits": 1, "max_digits": 1, "terms": 3}, 3.0),
            ("hard", {"min_digits": 2, "max_digits": 2}, 1.0),
        ]
    ]
    return load_config(
        {
            "name": "bench_curriculum",
            "seed": 0,
            "model": {"name": "tiny", "cache_dir": cache, "warmup": {"max_steps": 300, "stop_at_accuracy": 0.4}},
            "data": {"tasks": tasks, "eval_items": eval_items, **arm},
            "rollout": {"prompts_per_step": 8, "group_size": 8, "max_new_tokens": 10},
            "reward": {"in_process": True},
            "train": {"lr": 3e-4},
            "eval": {"k": 1, "batch_size": 200},
            "tracking": {"quiet": True},
            "runtime": {"device": "cpu"},
        }
    )


def run_arm(name: str, arm: dict[str, Any], seconds: float, cache: str, eval_items: int) -> dict[str, float]:
    parts = build_parts(config(arm, cache, eval_items), lambda msg: print(f"  [{name}] {msg}", flush=True))
    before = run_eval(parts)
    start, steps, hard_share = time.perf_counter(), 0, 0.0
    while time.perf_counter() - start < seconds:
        metrics, _ = rl_step(parts)
        steps += 1
        hard_share += metrics.get("task/hard/share", 0.0)
    after = run_eval(parts)
    parts.runtime.close()
    return {
        "steps": steps,
        "hard_share": hard_share / max(steps, 1),
        "easy_before": before["task/easy/accuracy"],
        "hard_before": before["task/hard/accuracy"],
        "easy": after["task/easy/accuracy"],
        "hard": after["task/hard/accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="RL wall time per arm")
    parser.add_argument("--eval-items", type=int, default=100, help="held-out items per task")
    parser.add_argument("--cache", default="/tmp/vcache", help="where the tiny base model is cached")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {name: run_arm(name, arm, args.seconds, args.cache, args.eval_items) for name, arm in ARMS.items()}
    print(f"\n{args.seconds:.0f} s of RL per arm, {args.eval_items} held-out items per task, greedy accuracy")
    print(
        f"{'arm':<12}{'steps':>6}{'hard share':>12}{'easy before':>13}{'easy after':>12}{'hard before':>13}"
        f"{'hard after':>12}"
    )
    for name, r in rows.items():
        print(
            f"{name:<12}{r['steps']:>6}{r['hard_share']:>12.2f}{r['easy_before']:>13.3f}{r['easy']:>12.3f}"
            f"{r['hard_before']:>13.3f}{r['hard']:>12.3f}"
        )


if __name__ == "__main__":
    main()
