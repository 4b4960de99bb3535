"""Tree-search rollouts (DeepSearch) against plain GRPO at equal RL wall time, on the quickstart task.

Every arm starts from the quickstart's cached tiny base (three-term one-digit chain_sum) with the quickstart's
settings at a constant learning rate, and trains until ``--seconds`` of RL wall time (rollouts and updates, not
evaluation) have passed; held-out greedy accuracy, pass@1 and pass@k are measured ``--evals`` times on the way.

- grpo: 16 independent samples per prompt, group-relative advantages (the quickstart).
- tree: 16 paths of a search tree per prompt over one-token steps (4 branches per expansion, frontier selection,
  backup), the backed-up paths trained with Tree-GRPO step advantages, and the replay buffer.
- tree_outcome: the same trees, every path trained with plain GRPO on its outcome (search without step credit).

Run from the repository root after ``verity init examples/quickstart.yaml``:

    python3 bench/bench_tree.py [--seconds 200] [--evals 4] [--arms grpo,tree,tree_outcome]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from common import QUICKSTART, quickstart_base

from verity.build import build_parts
from verity.config import load_config
from verity.loop import rl_step, run_eval

TREE = ["rollout.strategy=tree", "rollout.tree.step_tokens=1", "rollout.tree.width=4"]
ARMS: dict[str, list[str]] = {
    "grpo": [],
    "tree": [*TREE, "algo.advantage=tree_grpo"],
    "tree_q": [*TREE, "algo.advantage=tree_q"],
    "tree_outcome": [*TREE, "rollout.tree.paths=all", "rollout.tree.replay.enabled=false", "algo.advantage=grpo"],
}
COMMON = [
    "train.lr_schedule=constant",
    "reward.in_process=true",
    "tracking.quiet=true",
    "runtime.threads=1",
    "eval.k=4",
]


def run_arm(name: str, seconds: float, evals: int) -> list[dict[str, Any]]:
    cfg = load_config(QUICKSTART, COMMON + ARMS[name])
    parts = build_parts(cfg, lambda msg: print(f"  [{name}] {msg}", flush=True))
    rows = [_measure(parts, 0.0, 0, {})]
    trained, steps = 0.0, 0
    totals = {"train_accuracy": 0.0, "solved": 0.0}  # rollouts' share correct; trees with a correct path
    for checkpoint in range(1, evals + 1):
        while trained < seconds * checkpoint / evals:
            start = time.perf_counter()
            metrics, _ = rl_step(parts)
            trained += time.perf_counter() - start
            steps += 1
            totals["train_accuracy"] += metrics["accuracy"]
            totals["solved"] += metrics.get("tree/solved", float("nan"))
        rows.append(_measure(parts, trained, steps, {k: v / steps for k, v in totals.items()}))
        print(f"  [{name}] {rows[-1]}", flush=True)
    parts.close()
    return rows


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
    parser.add_argument("--seconds", type=float, default=200.0, help="RL wall time per arm")
    parser.add_argument("--evals", type=int, default=4, help="evaluations during each arm")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms")
    args = parser.parse_args()
    torch.set_num_threads(1)
    quickstart_base()
    results = {name: run_arm(name, args.seconds, args.evals) for name in args.arms.split(",")}
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
