"""Seconds per RL step by phase, and optimizer steps per second, of Verity's own loop.

Runs ``verity train`` on the quickstart config (8 prompts x group 8, 12 new tokens, GRPO, one optimizer step per
RL step) with the chosen model, evaluation reduced to a few items, and reads the loop's own phase timers from
``metrics.jsonl``. Steps per second is measured on wall time between the first and the last step, so it counts
everything the loop does (sampling, scoring, collation, advantages, update, logging).

    python3 -m bench.bench_step --model quickstart --steps 10 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.common import MODELS, machine_note, model_dir, quickstart_config, set_threads
from verity.loop import train

PHASES = ("time/generate", "time/score", "time/train", "time/sync")
PROMPTS, GROUP, NEW_TOKENS = 8, 8, 12  # the RL batch shape every end-to-end figure uses (also TRL's)


def run_loop(model: str, steps: int, threads: int | None, extra: list[str]) -> list[dict[str, Any]]:
    """Metrics rows of each training step of a fresh run."""
    with tempfile.TemporaryDirectory() as out:
        overrides = [
            f"model.name={model_dir(model)}",
            f"train.steps={steps}",
            f"output_dir={out}",
            "name=bench",
            "eval.every=0",
            "eval.items=8",
            "eval.k=1",
            f"train.checkpoint_every={steps + 1}",
            f"rollout.prompts_per_step={PROMPTS}",
            f"rollout.group_size={GROUP}",
            f"rollout.max_new_tokens={NEW_TOKENS}",
            *([f"runtime.threads={threads}"] if threads else []),
            *extra,
        ]
        train(quickstart_config(overrides), quiet=True)
        rows = [json.loads(line) for line in (Path(out) / "bench" / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "time/train" in r]


def summarize(model: str, rows: list[dict[str, Any]]) -> float:
    """Print per-phase medians (first step left out: warm-up) and return optimizer steps per second."""
    steady = rows[1:]
    print(f"model {model}: {len(steady)} steps after one warm-up step")
    for phase in PHASES:
        print(f"  {phase:15s} {statistics.median(r[phase] for r in steady):7.3f} s (median)")
    wall = (rows[-1]["time"] - rows[0]["time"]) / (len(rows) - 1)
    print(f"  wall per step   {wall:7.3f} s  -> {1 / wall:.3f} optimizer steps/s")
    return 1 / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=[*MODELS, "all"], default="quickstart")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "overrides", nargs="*", help="extra dotted config overrides, e.g. train.micro_batch_size=16"
    )
    args = parser.parse_args()
    set_threads(args.threads)
    print(machine_note())
    for name in MODELS if args.model == "all" else (args.model,):
        summarize(name, run_loop(name, args.steps, args.threads, args.overrides))


if __name__ == "__main__":
    main()
