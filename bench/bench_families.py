"""Does the default recipe hold across task families? The quickstart config with only the reasoning-gym family
name and ``rollout.max_new_tokens`` changed (the quickstart family also over three seeds), each run trained for
the same wall-time budget from its own tiny base, and one table: held-out greedy accuracy and pass@k before and
after RL, the majority-answer baseline, whether pass@k fell (collapse), steps, wall time and the warnings the run
raised (pool: a small training pool; signal: groups without reward differences; gap: training far above held-out;
base: a base not competent or not diverse; collapse: pass@k or entropy fell). Rows marked "small" configure a
family with a question space of a few hundred questions or fewer.

The budget becomes a step count per run: three timed steps on a throwaway copy give the seconds per step, and the
run then trains ``budget / step_time`` steps, so the learning-rate schedule ends where the budget does. Run from
the repository root, on an otherwise idle machine:

    python3 bench/bench_families.py [--seconds 90] [--families chain_sum,gcd-small] [--seeds 0,1] [--out /tmp/f]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verity.build import build_parts, build_tasks
from verity.config import Config, load_config
from verity.loop import rl_step, train

QUICKSTART = "examples/quickstart.yaml"


@dataclass(frozen=True)
class Family:
    """A row: a reasoning-gym family, its kind, room for "<answer>" + the longest answer + "</answer>" in the tiny
    BPE, and its settings (None: the family's defaults; chain_sum's are the quickstart's)."""

    name: str
    kind: str
    max_new_tokens: int
    kwargs: dict[str, Any] | None = field(default=None, hash=False)


FAMILIES: dict[str, Family] = {
    "chain_sum": Family("chain_sum", "arithmetic", 12),
    "basic_arithmetic": Family("basic_arithmetic", "arithmetic", 16),
    "count_bits": Family("count_bits", "counting", 12),
    "letter_counting": Family("letter_counting", "counting", 12),
    "spell_backward": Family("spell_backward", "string manipulation", 16),
    "number_sequence": Family("number_sequence", "sequences", 12),
    "syllogism": Family("syllogism", "logic", 12),
    "gcd": Family("gcd", "number theory", 12),
    # small question spaces: 100 numbers, 100 pairs, 200 sums
    "count_bits-small": Family("count_bits", "counting, small", 12, {"min_n": 1, "max_n": 100}),
    "gcd-small": Family("gcd", "number theory, small", 12, {"min_value": 1, "max_value": 10}),
    "chain_sum-small": Family(
        "chain_sum", "arithmetic, small", 12, {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    ),
}
WARNING_TAGS = {  # a word of each warning's text -> its tag in the table
    "distinct training questions": "pool",
    "all-equal rewards": "signal",
    "against held-out accuracy": "gap",
    "the tiny base": "base",
    "exploration is collapsing": "collapse",
    "policy entropy fell": "collapse",
}
COLLAPSE_DROP = 0.05  # pass@k falling by more than this (out of 1) counts as collapse


def family_config(
    family: str, seed: int, out: Path, steps: int | None = None, extra: tuple[str, ...] = ()
) -> Config:
    row = FAMILIES[family]
    overrides = [
        f"name={family}-seed{seed}",
        f"output_dir={out}",
        f"seed={seed}",
        f"data.tasks.0.name={row.name}",
        f"rollout.max_new_tokens={row.max_new_tokens}",
        "runtime.threads=1",
        "tracking.quiet=true",
    ]
    if row.kwargs is not None or row.name != "chain_sum":  # the quickstart's kwargs are chain_sum's own
        overrides.append(f"data.tasks.0.kwargs={json.dumps(row.kwargs or {})}")
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
        "kind": FAMILIES[family].kind,
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
        "warnings": summary["warnings"],
    }


def warning_tags(warnings: list[str]) -> str:
    """The table's short names of a run's warnings, each once, in the order of ``WARNING_TAGS``."""
    tags = dict.fromkeys(tag for text, tag in WARNING_TAGS.items() if any(text in w for w in warnings))
    other = any(not any(text in w for text in WARNING_TAGS) for w in warnings)
    return ",".join([*tags, *(["other"] if other else [])]) or "-"


def print_table(rows: list[dict[str, Any]], length: str, extra: tuple[str, ...]) -> None:
    changed = f"; also set: {' '.join(extra)}" if extra else ""
    print(f"\nquickstart recipe, family and max_new_tokens changed{changed}; {length} per run; one torch thread")
    print(
        f"{'family':18s} {'kind':22s} seed majority  base -> after   pass@k before -> after  collapse steps  "
        "wall  warnings"
    )
    for r in rows:
        print(
            f"{r['family']:18s} {r['kind']:22s} {r['seed']:4d} {r['majority']:8.3f} {r['base']:5.3f} -> "
            f"{r['after']:5.3f}   {r['k']:6s} {r['pass_before']:6.3f} -> {r['pass_after']:5.3f}  "
            f"{'YES' if r['collapsed'] else 'no':8s} {r['steps']:5d} {r['wall_s']:5.0f}s  "
            f"{warning_tags(r['warnings'])}"
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
        if family not in FAMILIES:
            parser.error(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
        seeds = [int(s) for s in args.seeds.split(",")] if family == "chain_sum" else [0]
        for seed in seeds:
            out = Path(args.out) / f"{time.time_ns()}"
            rows.append(run(family, seed, args.seconds, out, args.steps, extra))
            print(rows[-1], flush=True)
    print_table(rows, f"{args.steps} steps" if args.steps else f"{args.seconds:g} s of RL", extra)


if __name__ == "__main__":
    main()
