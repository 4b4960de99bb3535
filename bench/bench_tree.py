"""Tree-search rollouts (DeepSearch) against plain GRPO at equal RL wall time, on the quickstart task.

Every arm starts from the quickstart's cached tiny base (three-term one-digit chain_sum) with the quickstart's
settings at a constant learning rate, and trains until ``--seconds`` of RL wall time (rollouts and updates, not
evaluation) have passed; held-out greedy accuracy, pass@1 and pass@k are measured ``--evals`` times on the way.
The arms take turns (a slice of RL time each), so a change in the machine's load weighs on all of them.

- grpo: 16 independent samples per prompt, group-relative advantages (the quickstart).
- tree: 16 paths of a search tree per prompt over one-token steps (8 branches per expansion, frontier selection,
  backup, replay buffer); the backed-up paths trained on their steps' backed-up values (``tree_q``).
- tree_eq15: the same, trained with the paper's final advantage, step value minus the tree's mean outcome
  (``tree_grpo``).

Run from the repository root after ``verity init examples/quickstart.yaml``:

    python3 bench/bench_tree.py [--seconds 240] [--evals 6] [--arms grpo,tree,tree_eq15]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from common import GRPO, QUICKSTART, quickstart_base

from verity.build import build_parts
from verity.config import load_config
from verity.loop import rl_step, run_eval

TREE = ["rollout.workflow=tree", "rollout.tree.step_tokens=1", "rollout.tree.width=8"]
ARMS: dict[str, list[str]] = {
    "grpo": [],
    "tree": [*TREE, "algo.advantage=tree_q"],
    "tree_eq15": [*TREE, "algo.advantage=tree_grpo"],
}
COMMON = [
    *GRPO,
    "train.lr_schedule=constant",
    "reward.in_process=true",
    "tracking.quiet=true",
    "runtime.threads=1",
    "eval.k=4",
]


class Arm:
    """One arm's run: its parts, the RL seconds and steps so far, and running sums of its step metrics."""

    def __init__(self, name: str) -> None:
        self.name = name
        cfg = load_config(QUICKSTART, COMMON + ARMS[name])
        self.parts = build_parts(cfg, lambda msg: print(f"  [{name}] {msg}", flush=True))
        self.trained, self.steps = 0.0, 0
        self.totals = {"train_accuracy": 0.0, "solved": 0.0}  # rollouts' share correct; trees with a correct path
        self.rows = [_measure(self.parts, 0.0, 0, {})]

    def train_until(self, seconds: float) -> None:
        while self.trained < seconds:
            start = time.perf_counter()
            metrics, _ = rl_step(self.parts)
            self.trained += time.perf_counter() - start
            self.steps += 1
            self.totals["train_accuracy"] += metrics["accuracy"]
            self.totals["solved"] += metrics.get("tree/solved", float("nan"))
        means = {k: v / self.steps for k, v in self.totals.items()}
        self.rows.append(_measure(self.parts, self.trained, self.steps, means))
        print(f"  [{self.name}] {self.rows[-1]}", flush=True)


def run_arms(names: list[str], seconds: float, evals: int) -> dict[str, list[dict[str, Any]]]:
    """Train the arms in turns, a slice of ``seconds / evals`` each, so that a machine whose load changes over
    the run weighs on every arm alike; each arm is evaluated at the end of each of its slices."""
    arms = [Arm(name) for name in names]
    for checkpoint in range(1, evals + 1):
        for arm in arms:
            arm.train_until(seconds * checkpoint / evals)
    for arm in arms:
        arm.parts.close()
    return {arm.name: arm.rows for arm in arms}


def _measure(parts: Any, trained: float, steps: int, means: dict[str, float]) -> dict[str, Any]:
    result = run_eval(parts)
    k = parts.cfg.eval.k
    return {
        "seconds": trained,
        "steps": steps,
        "accuracy": result["accuracy"],
        "pass@1": result["pass@1"],
        f"pass@{k}": result[f"pass@{k}"],
        **means,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0, help="RL wall time per arm")
    parser.add_argument("--evals", type=int, default=6, help="evaluations during each arm")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms")
    args = parser.parse_args()
    torch.set_num_threads(1)
    quickstart_base()
    results = run_arms(args.arms.split(","), args.seconds, args.evals)
    print(f"\n{args.seconds:.0f} s of RL per arm; held-out greedy accuracy, pass@1 and pass@4 on 200 items")
    print(
        "train acc and solved: means over the steps so far of the share of trained rollouts that were correct and"
    )
    print("of the trees that found a correct path")
    print(
        f"{'arm':<14}{'RL s':>6}{'steps':>7}{'greedy':>8}{'pass@1':>8}{'pass@4':>8}{'train acc':>10}{'solved':>8}"
    )
    for name, rows in results.items():
        for r in rows:
            extra = "".join(f"{r[key]:>{w}.3f}" if key in r else f"{'-':>{w}}" for key, w in _EXTRA)
            print(
                f"{name:<14}{r['seconds']:>6.0f}{r['steps']:>7}{r['accuracy']:>8.3f}{r['pass@1']:>8.3f}"
                f"{r['pass@4']:>8.3f}{extra}"
            )


_EXTRA = (("train_accuracy", 10), ("solved", 8))


if __name__ == "__main__":
    main()
