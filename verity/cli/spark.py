"""SPARK (Rahman et al., arXiv:2512.03244) as a command: sample solutions, verify each several times, aggregate
step verdicts into training data, fine-tune a generative PRM, and use it as the RL reward (``verity spark``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cli_main(argv: list[str]) -> int:
    """``verity spark CONFIG [overrides] [options]``: run the pipeline and print its figures."""
    from verity.recipes.spark.pipeline import SparkOptions

    defaults = SparkOptions()
    parser = argparse.ArgumentParser(prog="verity spark", description=__doc__)
    parser.add_argument(
        "config", help="a run config whose reward is an exact process verifier (examples/spark.yaml)"
    )
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. seed=1")
    parser.add_argument("--out", default="runs/spark", help="where the PRM, the RL runs and spark.json go")
    parser.add_argument("--prompts", type=int, default=defaults.prompts, help="training problems sampled")
    parser.add_argument("--solutions", type=int, default=defaults.solutions, help="answers sampled per problem")
    parser.add_argument(
        "--verifications", type=int, default=defaults.verifications, help="verifications per answer (voted)"
    )
    parser.add_argument(
        "--noise", type=float, default=defaults.noise, help="chance that one verification flips a step verdict"
    )
    parser.add_argument("--eval-prompts", type=int, default=defaults.eval_prompts, help="held-out problems for F1")
    parser.add_argument("--prm-steps", type=int, default=defaults.prm_steps, help="PRM fine-tuning steps")
    parser.add_argument(
        "--prm-labels",
        default=",".join(defaults.prm_labels),
        help="label sources to train a PRM on, from majority,single,exact; the first one's PRM is the RL reward",
    )
    parser.add_argument(
        "--prm-settings",
        default="{}",
        help="JSON of further prm_judge settings in the RL arms, e.g. '{\"min_steps\": 3}' (format constraints)",
    )
    parser.add_argument(
        "--orm-steps", type=int, default=defaults.orm_steps, help="outcome reward model training steps (0: none)"
    )
    parser.add_argument("--prm-lr", type=float, default=defaults.prm_lr, help="PRM fine-tuning learning rate")
    parser.add_argument(
        "--rl-seconds", type=float, default=0.0, help="wall time of each RL arm (0: stop after the PRM's F1)"
    )
    parser.add_argument(
        "--arms",
        default=",".join(defaults.arms),
        help="RL arms, from grpo,process_exact,spark,prm_outcome,rm_outcome",
    )
    args = parser.parse_intermixed_args(argv)  # overrides before, between or after the options, as in train
    from verity.cli.resolve import resolve_config
    from verity.recipes.spark.pipeline import run_spark

    opts = SparkOptions(
        prompts=args.prompts,
        solutions=args.solutions,
        verifications=args.verifications,
        noise=args.noise,
        eval_prompts=args.eval_prompts,
        prm_steps=args.prm_steps,
        prm_lr=args.prm_lr,
        rl_seconds=args.rl_seconds,
        arms=tuple(a for a in args.arms.split(",") if a),
        prm_labels=tuple(a for a in args.prm_labels.split(",") if a),
        prm_settings=json.loads(args.prm_settings),
        orm_steps=args.orm_steps,
    )
    result = run_spark(resolve_config(args.config, args.overrides), opts, Path(args.out))
    print(format_report(result))
    return 0


def format_report(result: dict) -> str:
    """The pipeline's figures as a short text table."""
    lines = [f"{'step labels / PRM':<40}{'F1':>7}{'prec':>7}{'recall':>7}{'acc':>7}{'parsed':>8}"]
    labels, prms = result["labels"], result["prm_held_out"]
    rows = {
        "1 noisy verification (train set)": labels["single"],
        "majority vote (train set)": labels["majority"],
        "'every step wrong' (held-out)": prms["all_wrong_baseline"],
        **{f"PRM on {name} labels (held-out)": r for name, r in prms.items() if name != "all_wrong_baseline"},
    }
    for name, r in rows.items():
        figures = (
            f"{r['f1']:>7.3f}{r['precision']:>7.3f}{r['recall']:>7.3f}{r['accuracy']:>7.3f}{r['parsed']:>8.2f}"
        )
        lines.append(f"{name:<40}{figures}")
    if result.get("orm_held_out"):
        orm = result["orm_held_out"]
        lines.append(
            f"ORM outcome accuracy (held-out) {orm['accuracy']:.3f}; right solutions {orm['right_share']:.3f}"
        )
    if "rl" in result:
        rl = result["rl"]
        lines.append(
            f"\nRL arms, {rl['seconds_per_arm']:g} s each; "
            f"exact held-out accuracy of the base {rl['base_accuracy']:.3f}"
        )
        for arm, row in rl.items():
            if isinstance(row, dict):
                lines.append(f"{arm:<16} steps {row['steps']:>4}  accuracy {row['accuracy']:.3f}")
    return "\n".join(lines)
