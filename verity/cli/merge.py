"""``verity merge OUT --base BASE MODEL [MODEL ...]``: merge models or LoRA adapters of one base
(docs/merging.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from verity.model.merge import METHODS, merge_models


def cli_main(argv: list[str]) -> int:
    """``verity merge OUT --base BASE MODEL [MODEL ...] --method ties ...``: write the merged model to OUT."""
    parser = argparse.ArgumentParser(
        prog="verity merge", description="Merge models (or LoRA adapters) fine-tuned from one base."
    )
    parser.add_argument("out", help="directory to write the merged model to (must not exist)")
    parser.add_argument("models", nargs="+", help="model or LoRA adapter directories, fine-tuned from --base")
    parser.add_argument("--base", required=True, help="the base model directory they were fine-tuned from")
    parser.add_argument("--method", choices=METHODS, default="task_arithmetic", help="see docs/merging.md")
    parser.add_argument("--weights", help="linear: comma-separated weights, one per model (default equal)")
    parser.add_argument("--scale", type=float, default=1.0, help="task_arithmetic, ties, dare: lambda")
    parser.add_argument("--density", type=float, default=0.2, help="ties: share of each task vector kept")
    parser.add_argument("--drop", type=float, default=0.9, help="dare: probability of dropping an entry")
    parser.add_argument("--combine", choices=("task_arithmetic", "ties"), default="task_arithmetic", help="dare")
    parser.add_argument("--seed", type=int, default=0, help="dare: seed of the dropped entries")
    args = parser.parse_args(argv)
    named = {"--base": args.base, **{f"model {i + 1}": path for i, path in enumerate(args.models)}}
    missing = [f"{label} {path}" for label, path in named.items() if not Path(path).exists()]
    if missing:
        print(f"verity merge: no such directory: {'; '.join(missing)}", file=sys.stderr)
        return 1
    if Path(args.out).exists():
        print(f"verity merge: {args.out} exists; choose a new directory", file=sys.stderr)
        return 1
    settings: dict[str, Any] = {"scale": args.scale, "density": args.density, "drop": args.drop}
    settings |= {"combine": args.combine, "seed": args.seed}
    if args.weights:
        settings["weights"] = [float(w) for w in args.weights.split(",")]
    try:
        out = merge_models(args.base, args.models, args.out, args.method, **settings)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"verity merge: {err}", file=sys.stderr)
        return 1
    print(f"merged model: {out}")
    return 0
