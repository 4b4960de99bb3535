"""One process per run directory: an exclusive ``fcntl`` lock on ``RUN_DIR/.lock``, held while a run writes.

The kernel drops the lock when its process dies (even by ``kill -9``), so a run whose summary says "running"
while nobody holds the lock has died.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

LOCK_FILE = ".lock"


class RunLocked(RuntimeError):
    """Another process is writing to the run directory."""


class RunLock:
    """The lock of one run directory; ``acquire`` fails at once, naming the holder, when another process has it."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise RunLocked(locked_message(self.path.parent, holder)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def locked_message(run_dir: Path, holder: str) -> str:
    return (
        f"{run_dir} is in use by another verity process (pid {holder}); wait for it to end, or give this run "
        "another name (name=...)"
    )


def lock_holder(run_dir: Path) -> str | None:
    """The process id (as written) of the process holding the run directory's lock now; None when none does."""
    path = Path(run_dir) / LOCK_FILE
    if not path.is_file():
        return None
    with path.open() as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "?"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def lock_is_held(run_dir: Path) -> bool:
    """Whether some process holds the run directory's lock now (False when there is no lock file)."""
    return lock_holder(run_dir) is not None
