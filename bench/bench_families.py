"""Does the default recipe hold across task families? The quickstart config with only the reasoning-gym family
name and ``rollout.max_new_tokens`` changed (the quickstart family also over three seeds), each run trained for
the same wall-time budget from its own tiny base, and one table: held-out greedy accuracy and pass@k before and
after RL, the majority-answer baseline, whether pass@k fell (collapse), steps and wall time.

The budget becomes a step count per run: three timed steps on a throwaway copy give the seconds per step, and the
run then trains ``budget / step_time`` steps, so the learning-rate schedule ends where the budget does. Run from
the repository root, on an otherwise idle machine:

    python3 bench/bench_families.py [--seconds 90] [--families chain_sum,gcd] [--seeds 0,1,2] [--out /tmp/fam]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path
from typing import Any

from verity.build import build_parts, build_tasks
from verity.config import Config, load_config
from verity.loop import rl_step, train

QUICKSTART = "examples/quickstart.yaml"
# family -> (kind, max_new_tokens): room for "<answer>" + the longest answer + "</answer>" in the tiny BPE.
FAMILIES: dict[str, tuple[str, int]] = {
    "chain_sum": ("arithmetic", 12),
    "basic_arithmetic": ("arithmetic", 16),
    "count_bits": ("counting", 12),
    "letter_counting": ("counting", 12),
    "spell_backward": ("string manipulation", 16),
    "number_sequence": ("sequences", 12),
    "syllogism": ("logic", 12),
    "gcd": ("number theory", 12),
}
COLLAPSE_DROP = 0.05  # pass@k falling by more than this (out of 1) counts as collapse


def family_config(
    family: str, seed: int, out: Path, steps: int | None = None, extra: tuple[str, ...] = ()
) -> Config:
    overrides = [
        f"name={family}-seed{seed}",
        f"output_dir={out}",
        f"seed={seed}",
        f"data.tasks.0.name={family}",
        f"rollout.max_new_tokens={FAMILIES[family][1]}",
        "runtime.threads=1",
        "tracking.quiet=true",
    ]
    if family != "chain_sum":
        overrides.append("data.tasks.0.kwargs={}")  # the quickstart's kwargs are chain_sum's own
    if steps is not None:
        overrides += [f"train.steps={steps}", "eval.every=0"]
    return load_config(QUICKSTART, [*overrides, *extra])


def seconds_per_step(cfg: Config) -> float:
    """Mean time of steps 2 and 3 on a throwaway copy of the run (the first step pays one-off costs)."""
    parts = build_parts(cfg, lambda message: None)
    try:
        rl_step(parts)
        start = time.perf_counter()
        for _ in range(2):
            rl_step(parts)
        return (time.perf_counter() - start) / 2
    finally:
        parts.runtime.close()


def majority_baseline(cfg: Config, n_train: int = 2000) -> float:
    """Held-out accuracy of always giving the most frequent training answer."""
    sources, eval_items = build_tasks(cfg)
    answers = Counter(str(sources[0].train_item(i).answer) for i in range(n_train))
    top = answers.most_common(1)[0][0]
    return sum(str(item.answer) == top for item in eval_items) / len(eval_items)


def run(
    family: str, seed: int, budget: float, out: Path, steps: int | None = None, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One row of the table; ``steps`` fixes the step count instead of deriving it from ``budget``."""
    started = time.perf_counter()
    probe = family_config(family, seed, out / "probe", extra=extra)
    if steps is None:
        steps = max(10, int(budget / seconds_per_step(probe)))
    summary = train(family_config(family, seed, out, steps, extra), quiet=True)
    before, after = summary["eval_before"], summary["eval_after"]
    k = next(key for key in before if key.startswith("pass@") and key != "pass@1")
    return {
        "family": family,
        "kind": FAMILIES[family][0],
        "seed": seed,
        "majority": majority_baseline(probe),
        "base": before["accuracy"],
        "after": after["accuracy"],
        "k": k,
        "pass_before": before[k],
        "pass_after": after[k],
        "collapsed": after[k] < before[k] - COLLAPSE_DROP,
        "steps": steps,
        "wall_s": time.perf_counter() - started,
    }


def print_table(rows: list[dict[str, Any]], length: str, extra: tuple[str, ...]) -> None:
    changed = f"; also set: {' '.join(extra)}" if extra else ""
    print(f"\nquickstart recipe, family and max_new_tokens changed{changed}; {length} per run; one torch thread")
    print(
        f"{'family':18s} {'kind':20s} seed majority  base -> after   pass@k before -> after  collapse steps  wall"
    )
    for r in rows:
        print(
            f"{r['family']:18s} {r['kind']:20s} {r['seed']:4d} {r['majority']:8.3f} {r['base']:5.3f} -> "
            f"{r['after']:5.3f}   {r['k']:6s} {r['pass_before']:6.3f} -> {r['pass_after']:5.3f}  "
            f"{'YES' if r['collapsed'] else 'no':8s} {r['steps']:5d} {r['wall_s']:5.0f}s"
        )
    gains = sum(r["after"] > r["base"] for r in rows)
    print(
        f"greedy accuracy rose in {gains} of {len(rows)} runs; pass@k fell in {sum(r['collapsed'] for r in rows)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="RL wall time per run")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated families")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the quickstart family (others use seed 0)")
    parser.add_argument("--out", default="/tmp/verity-families", help="parent of the run directories")
    parser.add_argument("--steps", type=int, help="a fixed step count per run instead of --seconds")
    parser.add_argument("--set", action="append", default=[], help="a config override for every run (repeatable)")
    args = parser.parse_args()
    extra = tuple(args.set)
    rows = []
    for family in args.families.split(","):
        seeds = [int(s) for s in args.seeds.split(",")] if family == "chain_sum" else [0]
        for seed in seeds:
            out = Path(args.out) / f"{time.time_ns()}"
            rows.append(run(family, seed, args.seconds, out, args.steps, extra))
            print(rows[-1], flush=True)
    print_table(rows, f"{args.steps} steps" if args.steps else f"{args.seconds:g} s of RL", extra)


if __name__ == "__main__":
    main()
