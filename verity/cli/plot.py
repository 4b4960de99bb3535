"""``verity plot``: PNG figures of one or several runs' metrics, each against step and against wall time.

Each figure has two panels (left: training step, right: wall time) and overlays every run given, so runs can be
compared at equal steps and at equal cost. A figure is drawn only when some run logged one of its metrics;
per-task figures are drawn only when the runs hold two or more tasks. Figures are built on matplotlib's
object API with the Agg canvas, so plotting never touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verity.run.runs import metric_keys, metric_series, read_metrics, run_name

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

LINESTYLES = ("-", "--", ":", "-.")
KEEP_WHEN_ZERO = ("reward", "accuracy")


@dataclass(frozen=True)
class FigureSpec:
    """One figure: the metrics it draws are the keys that fully match one of ``patterns``. For per-task figures
    the pattern's group is the task name, used as the series label."""

    stem: str
    title: str
    patterns: tuple[str, ...]
    per_task: bool = False
    band: str | None = None  # a key holding the std of the first metric, drawn as mean ± std


FIGURES = (
    FigureSpec("reward", "Training reward", (r"reward/mean",), band="reward/std"),
    FigureSpec("accuracy", "Held-out accuracy", (r"eval/accuracy", r"eval/pass@\d+", r"eval/maj@\d+")),
    FigureSpec("response_length", "Response length (tokens)", (r"response_len/mean",)),
    FigureSpec("entropy", "Policy entropy", (r"entropy",)),
    FigureSpec("kl", "KL divergence to the reference", (r"kl",)),
    FigureSpec("clip_frac", "Clipped token fraction", (r"clip_frac",)),
    FigureSpec("throughput", "Throughput (tokens/s)", (r"throughput/tokens_per_s",)),
    FigureSpec("phase_times", "Seconds per step by phase", (r"time/(generate|score|train|sync|step)",)),
    FigureSpec("task_reward", "Training reward by task", (r"task/(.+)/reward",), per_task=True),
    FigureSpec("task_accuracy", "Training accuracy by task", (r"task/(.+)/accuracy",), per_task=True),
    FigureSpec("eval_task_accuracy", "Held-out accuracy by task", (r"eval/task/(.+)/accuracy",), per_task=True),
    FigureSpec("group_reward", "Training reward by item field", (r"by/(.+)/reward",), per_task=True),
    FigureSpec("group_accuracy", "Training accuracy by item field", (r"by/(.+)/accuracy",), per_task=True),
)


@dataclass(frozen=True)
class RunData:
    name: str
    rows: list[dict[str, Any]]


def load_runs(run_dirs: Sequence[Path]) -> list[RunData]:
    """Read each run's metrics; runs that share a name get their directory appended so legends stay distinct."""
    if not run_dirs:
        raise ValueError("no run directories given")
    for run_dir in run_dirs:
        if not (Path(run_dir) / "metrics.jsonl").is_file():
            raise FileNotFoundError(f"{run_dir}: no metrics.jsonl here; is this a run directory?")
    names = [run_name(Path(d)) for d in run_dirs]
    shared = {name for name in names if names.count(name) > 1}
    return [
        RunData(f"{name} ({Path(d)})" if name in shared else name, read_metrics(Path(d)))
        for name, d in zip(names, run_dirs, strict=True)
    ]


def matched_keys(spec: FigureSpec, keys: Sequence[str]) -> dict[str, str]:
    """The metrics ``spec`` draws among ``keys``, mapped to their series label."""
    found = {}
    for pattern in spec.patterns:
        for key in keys:
            match = re.fullmatch(pattern, key)
            if match:
                found[key] = match.group(1) if spec.per_task else key
    return found


def time_unit(max_seconds: float) -> tuple[str, float]:
    """Label and divisor for the wall-time axis, chosen so tick labels stay short."""
    if max_seconds > 2 * 3600:
        return "hours", 3600.0
    if max_seconds > 120:
        return "minutes", 60.0
    return "seconds", 1.0


def _new_figure() -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install 'verity[plot]'") from exc
    return Figure(figsize=(11, 4), dpi=100, layout="constrained")


def _draw(spec: FigureSpec, runs: list[RunData], axes: Sequence[Axes], unit: tuple[str, float]) -> None:
    label_keys = {key: label for run in runs for key, label in matched_keys(spec, metric_keys(run.rows)).items()}
    several_runs = len(runs) > 1
    for run_index, run in enumerate(runs):
        for key_index, (key, label) in enumerate(label_keys.items()):
            points = metric_series(run.rows, key)
            if not points:
                continue
            color = f"C{run_index if several_runs else key_index}"
            style = LINESTYLES[key_index % len(LINESTYLES)] if several_runs else "-"
            name = _series_label(run.name, label, several_runs, len(label_keys) > 1)
            sparse = len(points) < len(run.rows) / 2  # eval rows: mark the points actually measured
            steps, times, values = zip(*points, strict=True)
            for ax, xs in ((axes[0], steps), (axes[1], [t / unit[1] for t in times])):
                ax.plot(xs, values, style, color=color, label=name, marker="o" if sparse else None, markersize=3)
                if spec.band and key_index == 0:
                    divisor = unit[1] if ax is axes[1] else None
                    _draw_band(ax, run.rows, key, spec.band, divisor, color, label=run_index == 0)


def _series_label(run: str, label: str, several_runs: bool, several_keys: bool) -> str:
    if not several_runs:
        return label
    return f"{run}: {label}" if several_keys else run


def _draw_band(
    ax: Axes, rows: list[dict[str, Any]], key: str, band: str, divisor: float | None, color: str, label: bool
) -> None:
    """mean ± std of the samples of each step, clipped to the step's lowest and highest reward when logged (a
    0/1 reward's band never leaves [0, 1])."""
    std = {step: value for step, _, value in metric_series(rows, band)}
    low = {step: value for step, _, value in metric_series(rows, "reward/min")}
    high = {step: value for step, _, value in metric_series(rows, "reward/max")}
    points = [(s, t, v, std[s]) for s, t, v in metric_series(rows, key) if s in std]
    if not points:
        return
    xs = [t / divisor if divisor else s for s, t, _, _ in points]
    lower = [max(v - d, low.get(s, v - d)) for s, _, v, d in points]
    upper = [min(v + d, high.get(s, v + d)) for s, _, v, d in points]
    name = "± 1 std over the step's samples" if label else None
    ax.fill_between(xs, lower, upper, color=color, alpha=0.15, label=name)


def _always_zero(spec: FigureSpec, runs: list[RunData], keys: Sequence[str]) -> bool:
    """A figure whose every value is 0 (no KL term, nothing clipped) says nothing; rewards and accuracies at 0
    do, and are kept."""
    if spec.stem in KEEP_WHEN_ZERO or spec.per_task:
        return False
    return all(value == 0 for run in runs for key in keys for _, _, value in metric_series(run.rows, key))


def build_figures(runs: list[RunData]) -> list[tuple[str, Figure]]:
    """``(stem, figure)`` for every figure some run has data for, in ``FIGURES`` order."""
    all_keys = list(dict.fromkeys(key for run in runs for key in metric_keys(run.rows)))
    unit = time_unit(max((float(row.get("time") or 0.0) for run in runs for row in run.rows), default=0.0))
    figures = []
    for spec in FIGURES:
        labels = matched_keys(spec, all_keys)
        if (
            not labels
            or (spec.per_task and len(set(labels.values())) < 2)
            or _always_zero(spec, runs, list(labels))
        ):
            continue
        figure = _new_figure()
        axes = figure.subplots(1, 2, sharey=True)
        _draw(spec, runs, axes, unit)
        figure.suptitle(spec.title)
        axes[0].set_xlabel("step")
        axes[1].set_xlabel(f"wall time ({unit[0]})")
        for ax in axes:
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize="small", loc="best")
        figures.append((spec.stem, figure))
    return figures


def figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_runs(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """Write ``out_dir/<stem>.png`` for each figure the runs have data for; return the paths written."""
    runs = load_runs(run_dirs)  # before the folder is made: a wrong path leaves nothing behind
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, figure in build_figures(runs):
        path = out_dir / f"{stem}.png"
        path.write_bytes(figure_png(figure))
        written.append(path)
    return written


def cli_main(argv: list[str]) -> int:
    """``verity plot RUN_DIR [RUN_DIR ...] [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="verity plot", description="Plot runs' metrics (overlaid) as PNG files.")
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories to plot together")
    parser.add_argument(
        "--out", type=Path, help="output folder (default: RUN_DIR/plots for one run, else ./plots)"
    )
    args = parser.parse_args(argv)
    out = args.out or (args.run_dirs[0] / "plots" if len(args.run_dirs) == 1 else Path("plots"))
    try:
        paths = plot_runs(args.run_dirs, out)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"verity plot: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0
