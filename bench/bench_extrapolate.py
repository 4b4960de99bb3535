"""LoRA GRPO on the quickstart task with and without extrapolation of the adapters' trajectory (NExt,
``train.extrapolate``, docs/extrapolation.md): training wall time and steps until the held-out greedy accuracy
first reaches a threshold, and the accuracy after the same training wall time.

Each arm starts from the cached quickstart base (``verity init examples/quickstart.yaml``) with the same seed and
trains for --seconds of training wall time; the held-out evaluation every --eval-every steps runs with the clock
stopped, so both arms are charged only for training (rollouts, scoring, updates, jumps and weight syncs). Run from
the repository root:

    python3 bench/bench_extrapolate.py [--seconds 150] [--eval-every 5] [--threshold 0.5] [--seeds 0]
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
NEXT = {"every": 5, "history": 5, "horizon": 5, "degree": 2}
ARMS: dict[str, list[str]] = {
    "plain": [],
    "next": ["train.extrapolate.enabled=true", *(f"train.extrapolate.{k}={v}" for k, v in NEXT.items())],
}


def prediction_quality(points: list[dict[str, torch.Tensor]]) -> tuple[float, float]:
    """How well NEXT's settings would have predicted the plain run's own adapters: the mean over windows (one every
    ``every`` steps) of ``|predicted - actual| / |latest - actual|`` at ``horizon`` steps past the window (below 1:
    the jump lands closer to where training went than staying put), and the mean rank-1 share of the windows."""
    history, horizon, degree = NEXT["history"], NEXT["horizon"], NEXT["degree"]
    groups: dict[str, list[str]] = {}
    for name in points[0]:
        groups.setdefault(module_key(name), []).append(name)
    ratios, shares = [], []
    for end in range(history - 1, len(points) - horizon, NEXT["every"]):
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


def run_arm(name: str, overrides: list[str], args: argparse.Namespace) -> dict[str, Any]:
    # The base built for the quickstart's own seed, loaded by path, so other run seeds do not build their own.
    base = f"model.name={quickstart_base()}"
    run = [base, f"seed={args.seed}", f"train.lr={args.lr}", f"data.eval_items={args.eval_items}"]
    cfg = quickstart_config([*LORA, *overrides, *run])
    parts = build_parts(cfg, lambda msg: print(f"  [{name}] {msg}", flush=True))
    curve = [(0, 0.0, run_eval(parts)["accuracy"])]
    trained, steps, jumps, overhead = 0.0, 0, 0, 0.0
    adapters = {n: p for n, p in parts.learner.model.named_parameters() if p.requires_grad}
    points = [{n: p.detach().clone() for n, p in adapters.items()}]
    reached: tuple[int, float] | None = None
    while trained < args.seconds:
        start = time.perf_counter()
        metrics, _ = rl_step(parts)
        trained += time.perf_counter() - start
        steps += 1
        jumps += int(metrics.get("extrapolate/applied", 0.0))
        overhead += metrics.get("extrapolate/seconds", 0.0)
        points.append({n: p.detach().clone() for n, p in adapters.items()})
        if steps % args.eval_every == 0:
            curve.append((steps, trained, run_eval(parts)["accuracy"]))
            print(f"  [{name}] step {steps} at {trained:.0f} s: held-out accuracy {curve[-1][2]:.3f}", flush=True)
            if reached is None and curve[-1][2] >= args.threshold:
                reached = (steps, trained)
    final = run_eval(parts)["accuracy"]
    parts.close()
    return {
        "steps": steps,
        "jumps": jumps,
        "overhead": overhead,
        "reached": reached,
        "before": curve[0][2],
        "final": final,
        "prediction": prediction_quality(points) if jumps == 0 else None,  # windows must not span a jump
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="training wall time per arm")
    parser.add_argument("--eval-every", type=int, default=5, help="steps between held-out evaluations")
    parser.add_argument("--eval-items", type=int, default=200, help="held-out items")
    parser.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate of the adapters")
    parser.add_argument("--threshold", type=float, default=0.5, help="held-out greedy accuracy to reach")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="run seeds (the base model is shared)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for seed in args.seeds:
        args.seed = seed
        rows += [(name, seed, run_arm(name, overrides, args)) for name, overrides in ARMS.items()]
    print(
        f"\nLoRA GRPO (lr {args.lr:g}) on the quickstart task, {args.seconds:.0f} s of training per arm, greedy "
        f"accuracy on {args.eval_items} held-out items (evaluated every {args.eval_every} steps)"
    )
    print(
        f"{'arm':<7}{'seed':>5}{'steps':>7}{'jumps':>7}{'before':>8}{'to ' + str(args.threshold):>16}{'final':>8}"
    )
    for name, seed, r in rows:
        to = f"{r['reached'][1]:.0f} s / {r['reached'][0]} st" if r["reached"] else "not reached"
        row = f"{name:<7}{seed:>5}{r['steps']:>7}{r['jumps']:>7}{r['overhead']:>8.2f}{r['before']:>8.3f}"
        print(f"{row}{to:>16}{r['final']:>8.3f}")
    print(f"\nHow well {NEXT} predicts the plain runs' adapters (miss ratio below 1: better than staying put)")
    print(f"{'seed':>5}{'miss ratio':>12}{'rank-1 share':>14}")
    for _, seed, r in rows:
        if r["prediction"] is not None:
            print(f"{seed:>5}{r['prediction'][0]:>12.3f}{r['prediction'][1]:>14.3f}")


if __name__ == "__main__":
    main()
