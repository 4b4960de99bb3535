"""A small synthetic finished run directory, written the way the training loop writes one.

Values are simple functions of the step so tests can state them exactly: at step s of S, reward/mean is
0.1 + 0.8 s/S, held-out accuracy (every ``eval_every`` steps, and at step 0) is 0.2 + 0.5 s/S, each step takes
2 seconds. The last eval accuracy is therefore 0.7 and the best is 0.7.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

TRAIN_KEYS = (
    "reward/mean",
    "reward/std",
    "accuracy",
    "loss/policy",
    "kl",
    "entropy",
    "clip_frac",
    "response_len/mean",
    "grad_norm",
    "lr",
    "time/generate",
    "time/score",
    "time/train",
    "time/sync",
    "time/step",
    "throughput/tokens_per_s",
    "reward/failures",
)


def train_row(step: int, steps: int, tasks: tuple[str, ...]) -> dict:
    f = step / steps
    row = {
        "step": step,
        "time": 2.0 * step,
        "reward/mean": 0.1 + 0.8 * f,
        "reward/std": 0.3,
        "accuracy": 0.8 * f,
        "loss/policy": 0.05 - 0.1 * f,
        "kl": 0.01 * f,
        "entropy": 1.5 - f,
        "clip_frac": 0.1 * f,
        "response_len/mean": 40.0 + 10 * f,
        "grad_norm": 1.0,
        "lr": 1e-5,
        "time/generate": 1.25,
        "time/score": 0.25,
        "time/train": 0.375,
        "time/sync": 0.125,
        "time/step": 2.0,
        "throughput/tokens_per_s": 100.0 + step,
        "reward/failures": float(step == 7),
    }
    for index, task in enumerate(tasks):
        row[f"task/{task}/reward"] = 0.1 + 0.8 * f - 0.1 * index
        row[f"task/{task}/accuracy"] = 0.8 * f - 0.1 * index
    return row


def eval_row(step: int, steps: int, tasks: tuple[str, ...]) -> dict:
    accuracy = 0.2 + 0.5 * step / steps
    row = {"step": step, "time": 2.0 * step, "eval/accuracy": accuracy, "eval/pass@4": accuracy + 0.1}
    row["eval/maj@4"] = accuracy + 0.05
    for index, task in enumerate(tasks):
        row[f"eval/task/{task}/accuracy"] = accuracy - 0.05 * index
    return row


def eval_summary(row: dict) -> dict:
    return {key.removeprefix("eval/"): value for key, value in row.items() if key.startswith("eval/")}


def write_run(
    root: Path,
    name: str = "tiny",
    steps: int = 20,
    tasks: tuple[str, ...] = ("arith", "chain"),
    eval_every: int = 5,
    status: str = "finished",
) -> Path:
    """Write ``root/name`` with config.yaml, metrics.jsonl, samples.jsonl and summary.json; return its path."""
    run_dir = Path(root) / name
    run_dir.mkdir(parents=True)
    config = {
        "name": name,
        "model": {"name": "tiny"},
        "data": {"tasks": [{"name": task} for task in tasks]},
        "algo": {"name": "grpo", "group_size": 4},
        "train": {"steps": steps, "lr": 1e-5},
        "eval": {"every": eval_every, "k": [4]},
        "tracking": {"trackers": []},
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    rows, evals = [], []
    for step in range(steps + 1):
        if step > 0:
            rows.append(train_row(step, steps, tasks))
        if step % eval_every == 0:
            evals.append(eval_row(step, steps, tasks))
            rows.append(evals[-1])
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    samples = [
        {
            "step": step,
            "task": tasks[i % len(tasks)],
            "prompt": f"What is {step} + {i}?",
            "completion": f"<answer>{step + i}</answer>" if step > 1 else "I think <script>x</script>",
            "reward": 1.0 if step > 1 else 0.0,
            "answer": str(step + i),
        }
        for step in (1, steps // 2, steps)
        for i in range(2)
    ]
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    summary = {
        "name": name,
        "status": status,
        "steps": steps,
        "total_steps": steps,
        "wall_time_s": 2.0 * steps + 3.0,
        "eval_before": eval_summary(evals[0]),
        "eval_after": eval_summary(evals[-1]),
        "best_accuracy": max(row["eval/accuracy"] for row in evals),
        "final_model": str(run_dir / "final_model"),
        "warnings": ["step 7: 1 verifier timed out (scored 0)"],
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return run_dir


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a run's final model (one safetensors file, or the fsdp2 export's shards)."""
    files = sorted((run_dir / "final_model").glob("*.safetensors"))
    return {name: tensor for f in files for name, tensor in load_file(f).items()}
