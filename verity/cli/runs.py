"""``verity runs [ROOT]``: the table of runs under a directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from verity.run.runs import format_runs, list_runs


def cli_main(argv: list[str]) -> int:
    """``verity runs [ROOT]``: print the table of runs under ROOT (default ``runs``)."""
    parser = argparse.ArgumentParser(prog="verity runs", description="List the runs under a directory.")
    parser.add_argument("root", nargs="?", default="runs", type=Path, help="directory holding run directories")
    args = parser.parse_args(argv)
    try:
        rows = list_runs(args.root)
    except (FileNotFoundError, ValueError) as exc:
        print(f"verity runs: {exc}", file=sys.stderr)
        return 1
    print(format_runs(rows))
    return 0
