"""``verity`` command line: train, eval, init, plot, report, runs. Heavy imports wait until a command runs, so
``--help`` is instant."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="verity", description="RL post-training with verifiable rewards.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="Run the RL loop described by a YAML config.")
    train.add_argument("config", help="YAML config, e.g. examples/quickstart.yaml")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 rollout.group_size=4")
    train.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint")
    train.add_argument("--quiet", action="store_true", help="line-oriented progress, no live display")
    ev = sub.add_parser("eval", help="Held-out greedy accuracy, pass@k and maj@k of a model directory.")
    ev.add_argument("model", help="a Hugging Face causal-LM directory (e.g. RUN_DIR/final_model)")
    ev.add_argument("config", help="YAML config naming the tasks and verifiers")
    ev.add_argument("overrides", nargs="*", help="dotted overrides, e.g. eval.k=8")
    ev.add_argument("--out", help="where to write the JSON result (default: MODEL/eval.json)")
    init = sub.add_parser("init", help="Build (or reuse) the offline tiny base model a config names.")
    init.add_argument("config")
    init.add_argument("overrides", nargs="*")
    for name, help_text in (
        ("plot", "PNG curves of one or more runs."),
        ("report", "An HTML report of a run."),
        ("runs", "A table of the runs under a directory."),
    ):
        extra = sub.add_parser(name, help=help_text, add_help=False)
        extra.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may also follow options (``train cfg.yaml --resume train.steps=5``).
    misplaced = [a for a in extra if "=" in a and not a.startswith("-")]
    if len(misplaced) != len(extra) or not hasattr(args, "overrides"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if misplaced:
        args.overrides = [*args.overrides, *misplaced]
    from verity.config import ConfigError

    try:
        return _dispatch(args)
    except ConfigError as err:
        print(f"verity: {err}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("plot", "report", "runs"):
        import importlib

        return importlib.import_module(f"verity.{args.command}").cli_main(args.args)
    from verity.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.command == "train":
        return _train(cfg, args.resume, args.quiet)
    if args.command == "eval":
        return _eval(cfg, args.model, args.out)
    return _init(cfg)


def _train(cfg, resume: bool, quiet: bool) -> int:
    from verity.loop import TrainingStopped, train

    try:
        summary = train(cfg, resume=resume, quiet=quiet)
    except TrainingStopped as err:
        print(f"verity: {err}", file=sys.stderr)
        return 1
    before, after = summary.get("eval_before"), summary.get("eval_after")
    print()
    print(f"run directory : {cfg.run_dir}")
    print(
        f"status        : {summary['status']} after {summary['steps']} steps, "
        f"{summary['wall_time_s']:.0f} s wall time"
    )
    if before and after:
        print(
            f"held-out accuracy (greedy, {before['items']} items): "
            f"{before['accuracy']:.1%} before RL -> {after['accuracy']:.1%} after RL"
        )
    if summary.get("final_model"):
        print(f"final model   : {summary['final_model']}")
    return 0 if summary["status"] == "finished" else 130


def _eval(cfg, model: str, out: str | None) -> int:
    from verity.build import build_tasks, resolve_device
    from verity.data.prompts import encode_prompt
    from verity.eval import evaluate
    from verity.models import load_policy
    from verity.rewards.executor import RewardExecutor
    from verity.rollout.hf import HFEngine

    _, items = build_tasks(cfg)
    policy, tokenizer = load_policy(model, cfg.model.dtype, resolve_device(cfg.runtime.device))
    engine = HFEngine(policy, tokenizer, batch_size=cfg.eval.batch_size, seed=cfg.seed)
    with RewardExecutor(cfg.reward) as executor:
        result = evaluate(
            engine,
            lambda it: encode_prompt(tokenizer, it, cfg.data.system_prompt),
            items,
            executor.score,
            max_new_tokens=cfg.rollout.max_new_tokens,
            k=cfg.eval.k,
            temperature=cfg.eval.temperature,
            threshold=cfg.eval.threshold,
        )
    path = Path(out) if out else Path(model) / "eval.json"
    path.write_text(json.dumps(result, indent=2))
    shown = {k: round(v, 4) for k, v in result.items() if isinstance(v, float)}
    print(json.dumps(shown, indent=2))
    print(f"written to {path}")
    return 0


def _init(cfg) -> int:
    from verity.build import build_tasks
    from verity.models import BUILTIN, ensure_tiny_base
    from verity.rewards.executor import RewardExecutor

    if cfg.model.name != BUILTIN:
        print(f"model.name is {cfg.model.name!r}, not the built-in {BUILTIN!r}: nothing to build")
        return 0
    sources, items = build_tasks(cfg)
    with RewardExecutor(cfg.reward) as executor:
        path = ensure_tiny_base(cfg, sources, {it.prompt for it in items}, executor.score, print)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
