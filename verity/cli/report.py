"""``verity report``: one self-contained HTML page about a run.

The page needs no other file: figures are embedded as base64 PNG. It shows the run's outcome first (held-out
accuracy before, after and at best, with pass@k and maj@k), then the curves, where the time went (phase timings),
what the model wrote early and late in training, every logged metric, the config and the run's warnings.
"""

from __future__ import annotations

import argparse
import base64
import html
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from verity.run.runs import (
    finite,
    format_wall_time,
    is_run_dir,
    metric_keys,
    metric_series,
    read_config,
    read_metrics,
    read_samples,
    read_summary,
    run_name,
)

PHASES = ("generate", "score", "train", "sync")
COUNTS = ("items", "scored", "failures", "timeouts", "crashes", "unscorable", "worker_restarts", "tokens")
SAMPLES_PER_TABLE = 6
MAX_TEXT_CHARS = 800

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre, td.text { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 0.85em; }
img { max-width: 100%; }
.warn { color: #9a4d00; }
"""


def format_number(value: Any) -> str:
    """A metric value for a table cell: 4 significant digits, scientific below 1e-3, '-' when missing."""
    number = finite(value)
    if number is None:
        return "-"
    if number != 0 and abs(number) < 1e-3:
        return f"{number:.2e}"
    return f"{number:,.0f}" if abs(number) >= 1e4 else f"{number:.4g}"


def _table(header: Sequence[str] | None, rows: Iterable[Sequence[str]], numeric_from: int = 1) -> str:
    """An HTML table; cells are HTML-escaped, columns from ``numeric_from`` on are right-aligned."""
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"num" if i >= numeric_from else "text"}">{html.escape(str(cell))}</td>'
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table>{head}{body}</table>"


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


def outcome_section(summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Held-out metrics before training, after it and at their best logged value."""
    before, after = summary.get("eval_before") or {}, summary.get("eval_after") or {}
    eval_keys = [key.removeprefix("eval/") for key in metric_keys(rows) if key.startswith("eval/")]
    names = list(dict.fromkeys([*before, *after, *eval_keys]))
    if not names:
        return _section("Held-out accuracy", "<p>No held-out evaluation was logged.</p>")
    if not after:
        after = {name: points[-1][2] for name in names if (points := metric_series(rows, f"eval/{name}"))}
    table_rows = []
    for name in names:
        logged = [value for _, _, value in metric_series(rows, f"eval/{name}")]
        best = summary.get("best_accuracy") if name == "accuracy" else None
        best = best if finite(best) is not None else max(logged, default=None)
        cells = (before.get(name), after.get(name), best)
        table_rows.append([name, *(_outcome_cell(name, c) for c in cells)])
    return _section("Held-out accuracy", _table(["metric", "before", "final", "best"], table_rows))


def _outcome_cell(name: str, value: Any) -> str:
    """A rate with 3 decimals; a count (items, scored, failures...) as an integer."""
    number = finite(value)
    if number is None:
        return "-"
    return f"{number:.0f}" if name.rsplit("/", 1)[-1] in COUNTS else f"{number:.3f}"


def timing_section(rows: list[dict[str, Any]]) -> str:
    """Mean and total seconds per phase, and each phase's share of the summed step time."""
    step_total = sum(value for _, _, value in metric_series(rows, "time/step"))
    table_rows = []
    for phase in (*PHASES, "step"):
        values = [value for _, _, value in metric_series(rows, f"time/{phase}")]
        if values:
            share = f"{100 * sum(values) / step_total:.1f}%" if step_total > 0 else "-"
            table_rows.append([phase, format_number(sum(values) / len(values)), format_number(sum(values)), share])
    if not table_rows:
        return _section("Time by phase", "<p>No phase timings were logged.</p>")
    return _section("Time by phase", _table(["phase", "mean s/step", "total s", "share of step"], table_rows))


def metrics_section(rows: list[dict[str, Any]]) -> str:
    """Every logged metric: how many rows hold it, its first, last, min and max value."""
    table_rows = []
    for key in metric_keys(rows):
        values = [value for _, _, value in metric_series(rows, key)]
        if not values:
            table_rows.append([key, "0", "-", "-", "-", "-"])
            continue
        stats = (values[0], values[-1], min(values), max(values))
        table_rows.append([key, str(len(values)), *(format_number(v) for v in stats)])
    return _section("All metrics", _table(["metric", "rows", "first", "last", "min", "max"], table_rows))


def _clip(text: Any) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + " […]"


def samples_section(samples: list[dict[str, Any]], rows: Sequence[dict[str, Any]] = ()) -> str:
    """Completions at the first and the last sampled step, side by side in two tables, headed by that step's mean
    reward as logged (``reward/mean`` over all its rollouts; the few samples shown are not its mean)."""
    if not samples:
        return _section("Samples", "<p>No samples were written.</p>")
    steps = sorted({int(sample.get("step", 0)) for sample in samples})
    parts = []
    for label, step in (("Early", steps[0]), ("Late", steps[-1]))[: 1 if len(steps) == 1 else 2]:
        chosen = [s for s in samples if int(s.get("step", 0)) == step][:SAMPLES_PER_TABLE]
        logged = [
            v
            for row in rows
            if int(row.get("step", -1)) == step and (v := finite(row.get("reward/mean"))) is not None
        ]
        rewards = [r for s in chosen if (r := finite(s.get("reward"))) is not None]
        if logged:
            mean = f", mean reward {logged[-1]:.3f}"
        else:
            mean = (
                f", mean reward of these {len(rewards)} samples {sum(rewards) / len(rewards):.3f}"
                if rewards
                else ""
            )
        parts.append(f"<h3>{label}: step {step}{html.escape(mean)}</h3>")
        fields = ("task", "prompt", "completion", "answer")
        table_rows = [[*(_clip(s.get(f)) for f in fields), format_number(s.get("reward"))] for s in chosen]
        parts.append(_table(["task", "prompt", "completion", "answer", "reward"], table_rows, numeric_from=4))
    return _section("Samples", "\n".join(parts))


def figures_section(run_dir: Path) -> str:
    """Every figure ``verity plot`` draws for this run, embedded as base64 PNG."""
    try:
        from verity.cli.plot import build_figures, figure_png, load_runs

        figures = build_figures(load_runs([run_dir]))
    except ImportError as exc:
        return _section("Curves", f"<p>Curves left out: {html.escape(str(exc))}</p>")
    images = [
        f'<img alt="{stem}" src="data:image/png;base64,{base64.b64encode(figure_png(figure)).decode()}">'
        for stem, figure in figures
    ]
    return _section("Curves", "\n".join(images) or "<p>No metrics to plot.</p>")


def header_section(name: str, summary: dict[str, Any]) -> str:
    total = summary.get("total_steps")
    steps = f"{summary.get('steps', '-')}/{total}" if total else str(summary.get("steps", "-"))
    facts = [
        ["status", str(summary.get("status", "unknown"))],
        ["steps", steps],
        ["wall time", format_wall_time(finite(summary.get("wall_time_s")))],
        ["final model", str(summary.get("final_model") or "-")],
    ]
    if summary.get("error"):
        facts.insert(1, ["error", str(summary["error"])])
    return f"<h1>Run report: {html.escape(name)}</h1>\n" + _table(None, facts, numeric_from=2)


def warnings_section(summary: dict[str, Any]) -> str:
    warnings = summary.get("warnings") or []
    if not warnings:
        return _section("Warnings", "<p>None.</p>")
    items = "".join(f'<li class="warn">{html.escape(str(w))}</li>' for w in warnings)
    return _section("Warnings", f"<ul>{items}</ul>")


def image_answers_section(summary: dict[str, Any]) -> str:
    """The held-out images shown before and after training, with the greedy answers to them (empty for text
    tasks)."""
    parts = []
    for key, label in (("eval_before", "before RL"), ("eval_after", "after RL")):
        shown = [s for s in (summary.get(key) or {}).get("samples", []) if s.get("images")]
        if not shown:
            continue
        rows = "".join(_image_answer_row(s) for s in shown)
        head = "<tr><th>image</th><th>prompt</th><th>answer given</th><th>reference</th><th>correct</th></tr>"
        parts.append(f"<h3>{label}</h3><table>{head}{rows}</table>")
    return _section("Held-out images", "\n".join(parts)) if parts else ""


def _image_answer_row(sample: dict[str, Any]) -> str:
    images = "".join(f'<img alt="item image" src="{html.escape(uri)}" width="64">' for uri in sample["images"])
    cells = [_clip(sample.get("prompt")), _clip(sample.get("completion")), str(sample.get("answer"))]
    text = "".join(f'<td class="text">{html.escape(c)}</td>' for c in cells)
    return f"<tr><td>{images}</td>{text}<td>{'yes' if sample.get('correct') else 'no'}</td></tr>"


def render_report(run_dir: Path) -> str:
    """The report page for ``run_dir`` as an HTML string."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no such run directory: {run_dir}")
    if not is_run_dir(run_dir):
        raise FileNotFoundError(f"{run_dir}: no summary.json or metrics.jsonl here; is this a run directory?")
    name, summary, rows = run_name(run_dir), read_summary(run_dir), read_metrics(run_dir)
    config_text = yaml.safe_dump(read_config(run_dir), sort_keys=False) or "(no config.yaml)"
    body = [
        header_section(name, summary),
        warnings_section(summary),
        outcome_section(summary, rows),
        image_answers_section(summary),
        figures_section(run_dir) if rows else _section("Curves", "<p>No metrics.jsonl.</p>"),
        timing_section(rows),
        samples_section(read_samples(run_dir), rows),
        metrics_section(rows),
        _section("Config", f"<pre>{html.escape(config_text)}</pre>"),
    ]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(name)}</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "</body></html>\n"
    )


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``run_dir/report.html``) and return its path."""
    out = Path(out) if out is not None else Path(run_dir) / "report.html"
    page = render_report(Path(run_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def cli_main(argv: list[str]) -> int:
    """``verity report RUN_DIR [--out FILE]``."""
    parser = argparse.ArgumentParser(prog="verity report", description="Write a run's self-contained HTML report.")
    parser.add_argument("run_dir", type=Path, help="the run directory")
    parser.add_argument("--out", type=Path, help="output file (default: RUN_DIR/report.html)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.run_dir, args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"verity report: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
