"""Learning from unsolved and hard items: plain GRPO against re-thinking (Cog-Rethinker) and expert iteration
(BFS-Prover-V2) at equal RL wall time, on the quickstart task and on a harder one where most groups fail.

Each arm starts from the cached quickstart base (``verity init examples/quickstart.yaml`` builds it), trains for
--seconds of wall time (generation, scoring, the updates and each recipe's extra work all count), then is
evaluated on the same held-out items: greedy accuracy and pass@k. 'zero-acc groups' counts the groups whose
direct rollouts all failed; 'rescued' those of them a re-thinking stage solved; 'resample' is the control arm
that re-rolls failed groups from their unchanged prompt. Run from the repository root:

    python3 -m bench.bench_rethink [--seconds 100] [--settings quickstart,hard] [--eval-items 200]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from bench.common import machine_note, quickstart_base
from verity.build import build_parts
from verity.config import Config, load_config
from verity.data.groups import failed_groups
from verity.loop import rl_step, run_eval

SETTINGS: dict[str, dict[str, int]] = {
    "quickstart": {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1},  # base: ~0.3 greedy
    "hard": {"min_terms": 4, "max_terms": 4, "min_digits": 1, "max_digits": 1},  # base: ~0.06 greedy
}
ARMS: dict[str, dict[str, Any]] = {
    "grpo": {},
    "rethink": {"rethink": {"enabled": True}},
    # Control: the same machinery with the direct prompt as the only re-thinking stage, i.e. more samples of the
    # failed items, so the prompts' own effect shows apart from the extra sampling.
    "resample": {"rethink": {"enabled": True, "decompose_template": "{prompt}", "reflect_template": None}},
    "expert_iter": {"expert_iteration": {"enabled": True, "every": 4, "max_pass_rate": 0.5}},
}


def config(setting: str, arm: dict[str, Any], eval_items: int, k: int, seed: int) -> Config:
    task = {"source": "reasoning_gym", "name": "chain_sum", "kwargs": SETTINGS[setting]}
    return load_config(
        {
            "name": "bench_rethink",
            "seed": seed,
            "output_dir": "/tmp/verity-bench-rethink",
            "model": {"name": str(quickstart_base())},
            "data": {"tasks": [task], "eval_items": eval_items, **arm},
            "rollout": {"prompts_per_step": 16, "group_size": 8, "max_new_tokens": 12},
            "reward": {"in_process": True},
            "train": {"steps": 100_000, "lr": 3e-4, "lr_schedule": "constant", "micro_batch_size": 256},
            "eval": {"k": k, "batch_size": 256},
            "tracking": {"quiet": True},
            "runtime": {"device": "cpu"},
        }
    )


def run_arm(cfg: Config, seconds: float, k: int) -> dict[str, float]:
    parts = build_parts(cfg, lambda msg: None)
    before = run_eval(parts)
    totals = {"steps": 0.0, "zero": 0.0, "rescued": 0.0, "sft_items": 0.0}
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        metrics, rollouts = rl_step(parts)
        totals["steps"] += 1
        totals["zero"] += metrics.get("rethink/failed_groups", len(failed_groups(rollouts, cfg.eval.threshold)))
        totals["rescued"] += metrics.get("rethink/decompose_rescued", 0.0) + metrics.get(
            "rethink/reflect_rescued", 0.0
        )
        totals["sft_items"] += metrics.get("rethink/items", 0.0) + metrics.get("expert_iteration/items", 0.0)
    after = run_eval(parts)
    parts.close()
    return {
        **totals,
        "before": before["accuracy"],
        "after": after["accuracy"],
        "pass1": after["pass@1"],
        f"pass{k}": after[f"pass@{k}"],
        f"pass{k}_before": before[f"pass@{k}"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=100.0, help="RL wall time per arm")
    parser.add_argument("--settings", default="quickstart,hard", help=f"comma-separated: {', '.join(SETTINGS)}")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated: {', '.join(ARMS)}")
    parser.add_argument("--eval-items", type=int, default=200, help="held-out items")
    parser.add_argument("--k", type=int, default=4, help="samples per held-out item for pass@k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_note(), flush=True)
    rows = []
    for setting in args.settings.split(","):
        for arm in args.arms.split(","):
            result = run_arm(config(setting, ARMS[arm], args.eval_items, args.k, args.seed), args.seconds, args.k)
            rows.append((setting, arm, result))
            print(f"  {setting}/{arm}: {result}", flush=True)
    k = args.k
    print(f"\n{args.seconds:.0f} s of RL per arm, {args.eval_items} held-out items, seed {args.seed}")
    print(machine_note())
    head = f"{'setting':<11}{'arm':<13}{'steps':>6}{'greedy before':>14}{'greedy after':>13}{'pass@1':>8}"
    print(head + f"{f'pass@{k} before':>15}{f'pass@{k}':>8}{'zero-acc groups':>16}{'rescued':>8}{'SFT rows':>9}")
    for setting, arm, r in rows:
        print(
            f"{setting:<11}{arm:<13}{r['steps']:>6.0f}{r['before']:>14.3f}{r['after']:>13.3f}{r['pass1']:>8.3f}"
            f"{r[f'pass{k}_before']:>15.3f}{r[f'pass{k}']:>8.3f}{r['zero']:>16.0f}{r['rescued']:>8.0f}"
            f"{r['sft_items']:>9.0f}"
        )


if __name__ == "__main__":
    main()
