"""Reading run directories, and the ``verity runs`` table.

A run directory holds ``config.yaml``, ``metrics.jsonl``, ``samples.jsonl`` and ``summary.json`` (see the README's
run-directory section). Readers here tolerate what a live or crashed run leaves behind: missing files, a half
written last line, rows with any subset of metrics.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from verity.run.lock import lock_is_held

RUN_MARKERS = ("summary.json", "metrics.jsonl")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a jsonl file ([] if it does not exist). A malformed last line is skipped (a run still
    writing it, or killed mid-write); a malformed line before it is an error naming the file and line."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON object ({exc.msg}); fix or delete that line") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def read_samples(run_dir: Path) -> list[dict[str, Any]]:
    return read_jsonl(Path(run_dir) / "samples.jsonl")


def read_summary(run_dir: Path) -> dict[str, Any]:
    """``summary.json`` as a dict ({} when the run has not written one yet)."""
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return {}
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(summary, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(summary).__name__}")
    return summary


def read_config(run_dir: Path) -> dict[str, Any]:
    """``config.yaml`` as a dict ({} when missing)."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        return {}
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a YAML mapping, got {type(config).__name__}")
    return config


def run_name(run_dir: Path) -> str:
    """The run's name: from summary.json, else config.yaml, else the directory name."""
    return str(read_summary(run_dir).get("name") or read_config(run_dir).get("name") or Path(run_dir).name)


def finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, null, not a number, NaN or infinite."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def metric_series(rows: list[dict[str, Any]], key: str) -> list[tuple[int, float, float]]:
    """``(step, time, value)`` for every row holding a finite ``key``, in file order."""
    points = []
    for row in rows:
        value = finite(row.get(key))
        if value is not None:
            points.append((int(row.get("step", 0)), float(row.get("time") or 0.0), value))
    return points


def metric_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Every metric name in ``rows``, in first-seen order (``step`` and ``time`` excluded)."""
    keys = dict.fromkeys(key for row in rows for key in row if key not in ("step", "time"))
    return list(keys)


@dataclass(frozen=True)
class RunRow:
    """One line of ``verity runs``."""

    name: str
    path: Path
    steps: int
    total_steps: int | None
    best_accuracy: float | None
    wall_time_s: float | None
    status: str
    time_limit_s: float | None = None  # train.time_limit_s: then the step count is not the run's end


def describe_run(run_dir: Path) -> RunRow:
    """Summarise a run from summary.json, falling back to metrics.jsonl for a run that has not written one."""
    summary, rows = read_summary(run_dir), read_metrics(run_dir)
    evals = [value for _, _, value in metric_series(rows, "eval/accuracy")]
    times = [finite(row.get("time")) for row in rows]
    steps = summary.get("steps", max((int(row.get("step", 0)) for row in rows), default=0))
    best = finite(summary.get("best_accuracy"))
    wall = finite(summary.get("wall_time_s"))
    return RunRow(
        name=run_name(run_dir),
        path=Path(run_dir),
        steps=int(steps),
        total_steps=summary.get("total_steps"),
        best_accuracy=best if best is not None else max(evals, default=None),
        wall_time_s=wall if wall is not None else max((t for t in times if t is not None), default=None),
        status=live_status(run_dir, str(summary.get("status", "unknown"))),
        time_limit_s=finite(summary.get("time_limit_s")),
    )


def live_status(run_dir: Path, status: str) -> str:
    """``dead`` for a run whose summary says running while no process holds its lock (killed, or lost)."""
    if status == "running" and not lock_is_held(run_dir):
        return "dead"
    return status


def is_run_dir(path: Path) -> bool:
    return any((path / marker).is_file() for marker in RUN_MARKERS)


def list_runs(root: Path) -> list[RunRow]:
    """Every run directory at or under ``root`` (a directory holding summary.json or metrics.jsonl), by path.

    The walk does not descend into a run directory, so checkpoints and model folders are never scanned.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such directory: {root} (pass the directory that holds your runs)")
    found = []
    for current, subdirs, _ in os.walk(root):
        path = Path(current)
        if is_run_dir(path):
            found.append(path)
            subdirs.clear()
        else:
            subdirs.sort()
    return [describe_run(path) for path in sorted(found)]


def format_wall_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def format_steps(row: RunRow) -> str:
    """``12/100``; a run bounded by wall time shows its limit instead of a step count it never meant to reach."""
    if row.time_limit_s is not None:
        return f"{row.steps} (limit {format_wall_time(row.time_limit_s)})"
    return f"{row.steps}/{row.total_steps}" if row.total_steps else str(row.steps)


def format_runs(rows: list[RunRow]) -> str:
    """A plain-text table: name, steps (done/total), best held-out accuracy, wall time, status, path."""
    if not rows:
        return "no runs found"
    header = ("name", "steps", "best acc", "wall time", "status", "path")
    table = [header] + [
        (
            row.name,
            format_steps(row),
            "-" if row.best_accuracy is None else f"{row.best_accuracy:.3f}",
            format_wall_time(row.wall_time_s),
            row.status,
            str(row.path),
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(header))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) for cells in table)
    return "\n".join(line.rstrip() for line in lines)
