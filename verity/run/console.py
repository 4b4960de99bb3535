"""What a ``verity`` command prints, and where everything else goes.

Verity's own lines (progress, warnings, the one ``verity:`` line of an error) go to the terminal. Everything else
a run's processes print (vLLM's and Ray's logs, progress bars of other libraries, Python warnings, the tracebacks
of reward workers and engine processes, C-level output) goes to the run's log file: ``output_to`` points the
process's file descriptors 1 and 2 at it, so every child process started meanwhile inherits it, and keeps
duplicates of the terminal's descriptors for Verity.

``stop_children`` ends every process this one started (engine, reward workers, learner ranks, a local Ray),
for an interrupted command, so none outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

LOG_NAME = "verity.log"
INTERRUPTED = (
    "verity: interrupted; every file written so far is complete (a run goes on from its last checkpoint with "
    "--resume; a base model being built is rebuilt next time)"
)

_terminal: dict[str, TextIO] = {}
_log_path: list[Path] = []


def terminal_out() -> TextIO:
    """Where Verity's own output lines go: the terminal's stdout, also inside ``output_to``."""
    return _terminal.get("out", sys.stdout)


def terminal_err() -> TextIO:
    """Where Verity's own messages (progress, warnings, errors) go: the terminal's stderr."""
    return _terminal.get("err", sys.stderr)


def log_path() -> Path | None:
    """The log file third-party output went to last (``output_to``), if any."""
    return _log_path[-1] if _log_path else None


def log_note() -> str:
    """`` (tracebacks of other processes: PATH)`` when the last run's log holds any, for its one error line."""
    path = log_path()
    if path is None or not path.is_file():
        return ""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 2**20))
        tail = handle.read()
    return f" (tracebacks of other processes: {path})" if b"Traceback" in tail else ""


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Inside, the process's stdout and stderr (and those of the processes it starts, for their whole life)
    append to ``path``, while ``terminal_out()`` and ``terminal_err()`` stay the terminal; restored on exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {"out": os.dup(1), "err": os.dup(2)}
    _terminal.update({k: os.fdopen(os.dup(fd), "w", buffering=1, errors="replace") for k, fd in saved.items()})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    _log_path.append(path)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for stream in _terminal.values():
            stream.close()
        _terminal.clear()
        os.dup2(saved["out"], 1)
        os.dup2(saved["err"], 2)
        os.close(saved["out"])
        os.close(saved["err"])


def children(pid: int | None = None) -> list[int]:
    """The ids of every living descendant of ``pid`` (default: this process), from ``/proc`` (Linux; none
    elsewhere)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [os.getpid() if pid is None else pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def stop_children(grace_s: float = 5.0) -> None:
    """SIGTERM every descendant, then SIGKILL those still alive after ``grace_s`` seconds."""
    pids = children()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while sig == signal.SIGTERM and time.monotonic() < deadline and _alive(pids):
            time.sleep(0.05)
        pids = _alive(pids)
        if not pids:
            return


def _alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (an exited child waiting for its parent to collect it is not)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive
