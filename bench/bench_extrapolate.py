"""LoRA GRPO on the quickstart task with and without extrapolation of the adapters' trajectory (NExt,
``train.extrapolate``, docs/extrapolation.md): training wall time and steps until the held-out greedy accuracy
first reaches a threshold, and the accuracy after the same training wall time.

Each arm starts from the cached quickstart base (``verity init examples/quickstart.yaml``) with the same seed and
trains for --seconds of training wall time; the held-out evaluation every --eval-every steps runs with the clock
stopped, so both arms are charged only for training (rollouts, scoring, updates, jumps and weight syncs). The two
arms of a seed take their steps in turn, so a change in a shared machine's load falls on both. Run from the
repository root:

    python3 bench/bench_extrapolate.py [--seconds 75] [--eval-every 10] [--threshold 0.45] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from common import quickstart_base, quickstart_config

from verity.build import build_parts
from verity.loop import rl_step, run_eval
from verity.train.extrapolate import extrapolation_step, flat, module_key

LORA = [
    "model.lora.r=8",
    "model.lora.alpha=16",
    "train.lr_schedule=constant",
    "reward.in_process=true",
    "runtime.device=cpu",
    "tracking.quiet=true",
    "eval.k=1",
]
# train.extrapolate of the "next" arm (flags change it)
NEXT = {"every": 5, "history": 5, "horizon": 5, "degree": 2}


def arms(next_settings: dict[str, int]) -> dict[str, list[str]]:
    extrapolate = [f"train.extrapolate.{k}={v}" for k, v in next_settings.items()]
    return {"plain": [], "next": ["train.extrapolate.enabled=true", *extrapolate]}


def prediction_quality(points: list[dict[str, torch.Tensor]], settings: dict[str, int]) -> tuple[float, float]:
    """How well the jump ``settings`` would have predicted a plain run's own adapters: the mean over windows (one
    every ``every`` steps) of ``|predicted - actual| / |latest - actual|`` at ``horizon`` steps past the window
    (below 1: the jump lands closer to where training went than staying put), and the mean rank-1 share."""
    history, horizon, degree = settings["history"], settings["horizon"], settings["degree"]
    groups: dict[str, list[str]] = {}
    for name in points[0]:
        groups.setdefault(module_key(name), []).append(name)
    ratios, shares = [], []
    for end in range(history - 1, len(points) - horizon, settings["every"]):
        t = torch.arange(end - history + 1, end + 1, dtype=torch.float64)
        missed, stayed = 0.0, 0.0
        for names in groups.values():
            window = [flat(points[i], names) for i in range(end - history + 1, end + 1)]
            move, share = extrapolation_step(t, torch.stack([w - window[0] for w in window]), horizon, degree)
            actual = flat(points[end + horizon], names)
            missed += float(((window[-1] + move - actual) ** 2).sum())
            stayed += float(((window[-1] - actual) ** 2).sum())
            shares.append(share)
        ratios.append((missed / stayed) ** 0.5)
    return sum(ratios) / len(ratios), sum(shares) / len(shares)


class Arm:
    """One arm of one seed: its run's parts, its training clock and its held-out accuracy curve."""

    def __init__(self, name: str, overrides: list[str], args: argparse.Namespace) -> None:
        # The base built for the quickstart's own seed, loaded by path, so other run seeds do not build their own.
        base = f"model.name={quickstart_base()}"
        run = [base, f"seed={args.seed}", f"train.lr={args.lr}", f"data.eval_items={args.eval_items}"]
        self.name, self.args = name, args
        self.parts = build_parts(quickstart_config([*LORA, *overrides, *run]), self.log)
        self.before = run_eval(self.parts)["accuracy"]
        self.trained, self.steps, self.jumps, self.overhead = 0.0, 0, 0, 0.0
        self.adapters = {n: p for n, p in self.parts.learner.model.named_parameters() if p.requires_grad}
        self.points = [self.snapshot()]
        self.reached: tuple[int, float] | None = None

    def log(self, message: str) -> None:
        print(f"  [{self.name} {self.args.seed}] {message}", flush=True)

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.adapters.items()}

    def step(self) -> None:
        """One RL step on the arm's clock; the held-out evaluation when due, off the clock."""
        start = time.perf_counter()
        metrics, _ = rl_step(self.parts)
        self.trained += time.perf_counter() - start
        self.steps += 1
        self.jumps += int(metrics.get("extrapolate/applied", 0.0))
        self.overhead += metrics.get("extrapolate/seconds", 0.0)
        self.points.append(self.snapshot())
        if self.steps % self.args.eval_every == 0:
            accuracy = run_eval(self.parts)["accuracy"]
            self.log(f"step {self.steps} at {self.trained:.0f} s: held-out accuracy {accuracy:.3f}")
            if self.reached is None and accuracy >= self.args.threshold:
                self.reached = (self.steps, self.trained)

    def result(self) -> dict[str, Any]:
        final = run_eval(self.parts)["accuracy"]
        self.parts.close()
        return {
            "steps": self.steps,
            "jumps": self.jumps,
            "overhead": self.overhead,
            "reached": self.reached,
            "before": self.before,
            "final": final,
            # Windows of a run that jumped would span its jumps.
            "prediction": prediction_quality(self.points, self.args.next) if self.jumps == 0 else None,
        }


def run_seed(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Both arms of one seed, stepped in turn so that a change in the machine's load falls on both alike."""
    runs = [Arm(name, overrides, args) for name, overrides in arms(args.next).items()]
    while any(run.trained < args.seconds for run in runs):
        for run in runs:
            if run.trained < args.seconds:
                run.step()
    return [run.result() for run in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=75.0, help="training wall time per arm")
    parser.add_argument("--eval-every", type=int, default=10, help="steps between held-out evaluations")
    parser.add_argument("--eval-items", type=int, default=200, help="held-out items")
    parser.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate of the adapters")
    parser.add_argument("--threshold", type=float, default=0.45, help="held-out greedy accuracy to reach")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds (the base model is shared)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    for key, value in NEXT.items():
        parser.add_argument(f"--{key}", type=int, default=value, help=f"train.extrapolate.{key} of the next arm")
    args = parser.parse_args()
    args.next = {key: getattr(args, key) for key in NEXT}
    torch.set_num_threads(args.threads)
    rows = []
    for seed in args.seeds:
        args.seed = seed
        rows += list(zip(arms(args.next), [seed] * 2, run_seed(args), strict=True))
    print(
        f"\nLoRA GRPO (lr {args.lr:g}) on the quickstart task, {args.seconds:.0f} s of training per arm, greedy "
        f"accuracy on {args.eval_items} held-out items (evaluated every {args.eval_every} steps)"
    )
    head = f"{'arm':<7}{'seed':>5}{'steps':>7}{'jumps':>7}{'jump s':>8}{'before':>8}"
    print(f"{head}{'to ' + str(args.threshold):>16}{'final':>8}")
    for name, seed, r in rows:
        to = f"{r['reached'][1]:.0f} s / {r['reached'][0]} st" if r["reached"] else "not reached"
        row = f"{name:<7}{seed:>5}{r['steps']:>7}{r['jumps']:>7}{r['overhead']:>8.2f}{r['before']:>8.3f}"
        print(f"{row}{to:>16}{r['final']:>8.3f}")
    print(
        f"\nHow well {args.next} predicts the plain runs' adapters (miss ratio below 1: better than staying put)"
    )
    print(f"{'seed':>5}{'miss ratio':>12}{'rank-1 share':>14}")
    for _, seed, r in rows:
        if r["prediction"] is not None:
            print(f"{seed:>5}{r['prediction'][0]:>12.3f}{r['prediction'][1]:>14.3f}")


if __name__ == "__main__":
    main()
