"""The progress display of a training run.

On a terminal it is a live panel (a bar, reward, held-out accuracy, seconds per step, ETA, phase timings and
per-task numbers) redrawn in place. When quiet or when output is not a terminal (CI logs, ``nohup``), it prints
one plain line for a step at most every ``line_every_s`` seconds, plus the first and the last step, so logs stay
short and free of escape codes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

PHASES = ("generate", "score", "train", "sync")
MAX_TASKS_SHOWN = 6


def format_duration(seconds: float) -> str:
    """``42s``, ``3m07s``, ``2h05m``: short enough for one status line."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def task_numbers(metrics: Mapping[str, float]) -> dict[str, float]:
    """Per-task accuracy (or reward where a task logs no accuracy) from ``task/<family>/...`` keys."""
    numbers: dict[str, float] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        is_task = len(parts) == 3 and parts[0] == "task" and parts[2] in ("accuracy", "reward")
        if is_task and (parts[2] == "accuracy" or parts[1] not in numbers):
            numbers[parts[1]] = value
    return numbers


class RunProgress:
    """Shows how far a run is. Use as a context manager; call ``update`` after each step.

    ``step`` passed to ``update`` counts completed steps (1 after the first). ``start_step`` is where a resumed
    run started, so ETA = elapsed / (step - start_step) * (total_steps - step) counts only this process's steps.
    """

    def __init__(
        self,
        total_steps: int,
        quiet: bool = False,
        console: Console | None = None,
        *,
        start_step: int = 0,
        line_every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        time_limit_s: float | None = None,
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be at least 1, got {total_steps}")
        self.total_steps = total_steps
        self.console = console or Console(stderr=True)
        self.live_mode = not quiet and self.console.is_terminal
        self.start_step = start_step
        self.line_every_s = line_every_s
        self.time_limit_s = time_limit_s  # train.time_limit_s: the run ends then, whatever the step count
        self._clock = clock
        self._started = clock()
        self._last_line: float | None = None
        self._step = start_step
        self._metrics: dict[str, float] = {}
        self._eval_accuracy: float | None = None
        self._eval_step: int | None = None
        self._live: Live | None = None

    def __enter__(self) -> RunProgress:
        self._started = self._clock()
        if self.live_mode:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def update(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record the metrics of step ``step`` (a training row, an eval row, or both) and redraw. In lines, an
        eval row alone prints nothing: its result has a line of its own (``message``)."""
        self._step = step
        self._metrics = {**self._metrics, **metrics}
        if "eval/accuracy" in metrics:
            self._eval_accuracy, self._eval_step = float(metrics["eval/accuracy"]), step
        if self._live is not None:
            self._live.update(self._render())
            return
        if metrics and all(key.startswith("eval/") for key in metrics):
            return
        now = self._clock()
        due = self._last_line is None or now - self._last_line >= self.line_every_s
        if due or step >= self.total_steps:
            self._last_line = now
            self._print(self.status_line())

    def message(self, text: str) -> None:
        """Print a line (a checkpoint saved, an eval result) above the live display, or as its own log line."""
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False)
        else:
            self._print(text)

    def seconds_per_step(self) -> float | None:
        done = self._step - self.start_step
        return (self._clock() - self._started) / done if done > 0 else None

    def eta_seconds(self) -> float | None:
        rate = self.seconds_per_step()
        if rate is None:
            return None
        eta = rate * max(0, self.total_steps - self._step)
        if self.time_limit_s is not None:
            eta = min(eta, max(0.0, self.time_limit_s - (self._clock() - self._started)))
        return eta

    def status_line(self) -> str:
        """``step 12/100 | reward 0.420 | train acc 0.500 | eval acc 0.610 | 3.20 s/step | ETA 4m42s | ...``"""
        parts = [f"step {self._step}/{self.total_steps}"]
        for label, key in (("reward", "reward/mean"), ("train acc", "accuracy")):
            if key in self._metrics:
                parts.append(f"{label} {self._metrics[key]:.3f}")
        if self._eval_accuracy is not None:
            stale = f" (step {self._eval_step})" if self._eval_step != self._step else ""
            parts.append(f"eval acc {self._eval_accuracy:.3f}{stale}")
        rate, eta = self.seconds_per_step(), self.eta_seconds()
        if rate is not None and eta is not None:
            parts += [f"{rate:.2f} s/step", f"ETA {format_duration(eta)}"]
        phases = self._phase_text()
        if phases:
            parts.append(phases)
        tasks = self._task_text()
        if tasks:
            parts.append(tasks)
        return " | ".join(parts)

    def _phase_text(self) -> str:
        shown = [f"{p} {self._metrics[f'time/{p}']:.2f}s" for p in PHASES if f"time/{p}" in self._metrics]
        return " ".join(shown)

    def _task_text(self) -> str:
        numbers = task_numbers(self._metrics)
        shown = [f"{name} {value:.2f}" for name, value in sorted(numbers.items())[:MAX_TASKS_SHOWN]]
        if len(numbers) > MAX_TASKS_SHOWN:
            shown.append(f"+{len(numbers) - MAX_TASKS_SHOWN} more")
        return "tasks " + " ".join(shown) if shown else ""

    def _print(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _render(self) -> Table:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        rate, eta = self.seconds_per_step(), self.eta_seconds()
        timing = "-" if rate is None or eta is None else f"{rate:.2f} s/step, ETA {format_duration(eta)}"
        bar = ProgressBar(total=self.total_steps, completed=self._step, width=30)
        header = Table.grid(padding=(0, 1))
        header.add_row(bar, f"{self._step}/{self.total_steps}  ({timing})")
        grid.add_row("step", header)
        for label, key in (("reward", "reward/mean"), ("train acc", "accuracy"), ("kl", "kl")):
            if key in self._metrics:
                grid.add_row(label, f"{self._metrics[key]:.3f}")
        if self._eval_accuracy is not None:
            grid.add_row("eval acc", f"{self._eval_accuracy:.3f}")
        for label, text in (("phases", self._phase_text()), ("tasks", self._task_text().removeprefix("tasks "))):
            if text:
                grid.add_row(label, text)
        return grid
