"""``verity`` command line: train (and --dry-run), eval, init, plot, report, runs, merge, config-reference. Heavy
imports wait until a command runs, so ``--help`` is instant."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from verity.config import Config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="verity", description="RL post-training with verifiable rewards.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="Run the RL loop described by a YAML config.")
    train.add_argument("config", nargs="?", help="YAML config, e.g. examples/quickstart.yaml")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 rollout.group_size=4")
    train.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint")
    train.add_argument("--quiet", action="store_true", help="line-oriented progress, no live display")
    train.add_argument(
        "--dry-run", action="store_true", help="print the resolved config and the first prompts, then stop"
    )
    ev = sub.add_parser("eval", help="Held-out greedy accuracy, pass@k and maj@k of a model directory.")
    ev.add_argument("model", help="a Hugging Face causal-LM directory (e.g. RUN_DIR/final_model) or hub id")
    ev.add_argument(
        "config", nargs="?", help="YAML config naming tasks and verifiers (default: built-in defaults)"
    )
    ev.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.eval_items=500")
    ev.add_argument(
        "--task",
        action="append",
        help="a reasoning-gym family to evaluate on instead of the config's tasks, with optional JSON settings: "
        "chain_sum or 'chain_sum:{\"min_terms\": 3}' (repeatable)",
    )
    ev.add_argument("--k", help="pass@k values from max(k) samples per item, e.g. 1,8,16 (default: eval.k)")
    ev.add_argument("--out", help="where to write the JSON result (default: MODEL/eval.json)")
    init = sub.add_parser("init", help="Build (or reuse) the offline tiny base model a config names.")
    init.add_argument("config")
    init.add_argument("overrides", nargs="*")
    sub.add_parser("config-reference", help="Write docs/config.md, every config key with type and default.")
    for name, help_text in _OWN_PARSERS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


# Commands with their own argument parser (``verity.<name>.cli_main``), handed everything after their name.
_OWN_PARSERS = {
    "plot": "PNG curves of one or more runs.",
    "report": "An HTML report of a run.",
    "runs": "A table of the runs under a directory.",
    "merge": "Merge models (or LoRA adapters) fine-tuned from one base: linear, TIES, DARE, VaRM, ...",
    "spark": "SPARK: verify sampled solutions, train a generative PRM on the votes, RL with it as the reward.",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in _OWN_PARSERS:
        import importlib

        return importlib.import_module(f"verity.cli.{argv[0]}").cli_main(argv[1:])
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may also follow options (``train cfg.yaml --resume train.steps=5``).
    misplaced = [a for a in extra if "=" in a and not a.startswith("-")]
    if extra and (len(misplaced) != len(extra) or not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if misplaced:
        args.overrides = [*args.overrides, *misplaced]
    from verity.run.console import INTERRUPTED, log_note, log_path, stop_children, terminal_err
    from verity.schema import ConfigError

    try:
        return _dispatch(args)
    except ConfigError as err:
        print(f"verity: {err}{log_note()}", file=terminal_err())
        return 2
    except KeyboardInterrupt:
        stop_children()
        print(INTERRUPTED, file=terminal_err())
        return 130
    except Exception as err:
        log = log_path()
        if log is None:  # nothing hides the traceback: let Python print it
            raise
        import traceback

        with log.open("a") as handle:
            traceback.print_exc(file=handle)
        first = str(err).splitlines()[0] if str(err) else ""
        print(f"verity: {type(err).__name__}: {first} (traceback in {log})", file=terminal_err())
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "config-reference":
        from verity.cli.reference import write_reference

        print(write_reference())
        return 0
    from verity.cli.resolve import resolve_config, split_overrides
    from verity.schema import ConfigError

    args.config, args.overrides = split_overrides(args.config, args.overrides)
    if args.command == "train" and args.config is None:
        raise ConfigError("train needs a config file, e.g. verity train examples/quickstart.yaml")
    small_model = _evaluated_model_is_small(args.model) if args.command == "eval" else None
    cfg = resolve_config(args.config, args.overrides, small_model, writes_run_dir=args.command == "train")
    if args.command == "eval" and (args.task or args.k):
        cfg = resolve_config(args.config, [*args.overrides, *_eval_overrides(args, cfg)], small_model)
    if args.command == "train" and args.dry_run:
        from verity.cli.dryrun import dry_run

        print(dry_run(cfg))
        return 0
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-file load/save bars would interleave with Verity's own progress
    if args.command == "train":
        return _train(cfg, args.resume, args.quiet)
    if args.command == "eval":
        return _eval(cfg, args.model, args.out, _ks(args.k) if args.k else ())
    return _init(cfg)


def _evaluated_model_is_small(model: str) -> Callable[[Config], bool]:
    """``verity eval``'s threads follow the size of the model it evaluates, not the config's ``model.name``."""

    def small(cfg: Config) -> bool:
        from verity.model.loading import parameter_count
        from verity.run.checks import SMALL_MODEL_PARAMETERS

        count = parameter_count(model)
        return count is not None and count < SMALL_MODEL_PARAMETERS

    return small


def _train(cfg: Config, resume: bool, quiet: bool) -> int:
    from verity.loop import TrainingStopped, train
    from verity.run.console import log_note, terminal_err, terminal_out
    from verity.run.rundir import RunDirError

    try:
        summary = train(cfg, resume=resume, quiet=quiet, log_output=True)
    except (TrainingStopped, RunDirError) as err:
        print(f"verity: {err}{log_note()}", file=terminal_err())
        return 1
    if summary["status"] == "stopped":
        print(
            f"verity: stopped at step {summary['steps']} with a checkpoint of it; resume with --resume "
            f"({cfg.run_dir})",
            file=terminal_err(),
        )
        return 130
    before, after = summary.get("eval_before"), summary.get("eval_after")
    lines = [
        "",
        f"run directory : {cfg.run_dir}",
        f"status        : {summary['status']} after {summary['steps']} steps, "
        f"{summary['wall_time_s']:.0f} s wall time",
    ]
    if before and after:
        lines.append(
            f"held-out accuracy (greedy, {before['items']} items): "
            f"{before['accuracy']:.1%} before RL -> {after['accuracy']:.1%} after RL"
        )
    if summary.get("final_model"):
        lines.append(f"final model   : {summary['final_model']}")
    lines += [f"warning       : {warning}" for warning in summary.get("warnings", [])[:5]]
    print("\n".join(lines), file=terminal_out())
    return 0 if summary["status"] == "finished" else 130


def _eval_overrides(args: argparse.Namespace, cfg: Config) -> list[str]:
    """``--task`` and ``--k`` of ``verity eval`` as config overrides. A ``--task`` without settings that the
    config also names keeps the config's settings for it."""
    out = []
    if args.task:
        known = {t.name: t.model_dump(mode="json") for t in cfg.data.tasks}
        tasks = []
        for spec in args.task:
            name, _, settings = spec.partition(":")
            try:
                kwargs = json.loads(settings) if settings else None
            except json.JSONDecodeError as err:
                raise SystemExit(f"verity eval: --task {spec!r}: settings are not JSON ({err.msg})") from None
            if kwargs is None and name in known:
                tasks.append(known[name])
            else:
                tasks.append({"source": "reasoning_gym", "name": name, "kwargs": kwargs or {}})
        out.append(f"data.tasks={json.dumps(tasks)}")
    if args.k:
        out.append(f"eval.k={max(_ks(args.k))}")
    return out


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise SystemExit(f"verity eval: --k {text!r}: expected comma-separated integers, e.g. 1,8,16") from None
    if not ks or min(ks) < 1:
        raise SystemExit(f"verity eval: --k {text!r}: every k must be at least 1")
    return ks


def _eval(cfg: Config, model: str, out: str | None, ks: tuple[int, ...]) -> int:
    from rich.progress import Progress

    from verity.build import build_tasks, resolve_device
    from verity.data.prompts import TaskPrompts
    from verity.eval import evaluate
    from verity.model.loading import check_hub_model, load_tokenizer
    from verity.model.vision import processor_at
    from verity.rewards.executor import RewardExecutor
    from verity.rollout.engine import EngineSpec
    from verity.rollout.registry import build_engine

    check_hub_model(model, cfg.model.hub_timeout_s)
    _, items = build_tasks(cfg)
    tokenizer = load_tokenizer(model)
    device = resolve_device(cfg.runtime.device)
    spec = EngineSpec(
        model, tokenizer, cfg.model.dtype, device, cfg.seed, cfg.eval.batch_size, settings=cfg.rollout
    )
    engine = build_engine(cfg.rollout.engine, spec)
    prompts = TaskPrompts(cfg.data, processor_at(model))
    try:
        with RewardExecutor(cfg.reward) as executor, Progress(transient=True) as bar:
            task = bar.add_task("evaluating", total=len(items))
            result = evaluate(
                engine,
                lambda it: prompts.encode(tokenizer, it),
                items,
                executor.score,
                max_new_tokens=cfg.rollout.max_new_tokens,
                k=cfg.eval.k,
                temperature=cfg.eval.temperature,
                threshold=cfg.eval.threshold,
                pass_ks=[k for k in ks if k > 1],
                chunk_size=max(1, cfg.eval.batch_size // max(cfg.eval.k, 1)),
                on_progress=lambda n: bar.advance(task, n),
            )
    finally:
        engine.close()
    result["engine"] = cfg.rollout.engine
    path = Path(out) if out else Path(model) / "eval.json"
    path.write_text(json.dumps(result, indent=2))
    shown = {k: round(v, 4) for k, v in result.items() if isinstance(v, float)}
    print(json.dumps(shown, indent=2))
    print(f"written to {path}")
    return 0


def _init(cfg: Config) -> int:
    """The base ``verity train`` would build for this config, through the same steps (``tasks_and_base``)."""
    from verity.build import tasks_and_base
    from verity.rewards.executor import RewardExecutor
    from verity.run.base import BUILTINS

    if cfg.model.name not in BUILTINS:
        print(f"model.name is {cfg.model.name!r}, not a built-in base {BUILTINS}: nothing to build")
        return 0
    with RewardExecutor(cfg.reward) as executor:
        _, _, path = tasks_and_base(cfg, executor.score, print)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
