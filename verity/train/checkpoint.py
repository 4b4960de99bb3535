"""Atomic checkpoints: a step's state is written aside, fsynced, then renamed into place, and only then does the
``latest`` pointer move. A process killed at any moment leaves ``latest`` naming a complete checkpoint, and a
write that fails (a full disk) removes what it wrote and raises its ``OSError``, leaving the previous one.

A top-level part of the state that writes itself (``save_into(directory)``, e.g. the fsdp2 learner group, whose
ranks write their shards with ``torch.distributed.checkpoint``) is written into a subdirectory of the same staging
directory, so it is renamed into place with the rest; ``state.pt`` then holds a ``ShardedPart`` naming it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

STATE_FILE = "state.pt"
LATEST = "latest"


@dataclass
class ShardedPart:
    """A part of a checkpoint written as files into its subdirectory ``subdir``; ``meta`` is what its writer
    returned, ``directory`` is set when the checkpoint is loaded."""

    subdir: str
    meta: Any
    directory: Path | None = None


def save_checkpoint(root: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` as checkpoint ``step`` under ``root``; keep the ``keep`` newest; return its directory. The
    oldest is dropped before the new one is written, so the disk holds at most ``keep`` checkpoints meanwhile (two
    for ``keep=1``: the newest is never dropped before its successor is complete)."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    staging = root / f".staging_{step:07d}_{os.getpid()}"
    _prune(root, max(keep - 1, 1))
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        state = {
            key: ShardedPart(key, value.save_into(staging / key)) if hasattr(value, "save_into") else value
            for key, value in state.items()
        }
        _write_state(staging / STATE_FILE, state)
        if final.exists():
            shutil.rmtree(final)  # left by a process killed before it moved ``latest`` here
        os.replace(staging, final)
        _write_atomic(root / LATEST, final.name)
    except (OSError, RuntimeError):
        shutil.rmtree(staging, ignore_errors=True)
        if latest_checkpoint(root) != final:
            shutil.rmtree(final, ignore_errors=True)
        raise
    _fsync_dir(root)
    _prune(root, keep)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The directory ``latest`` names; when the pointer or the directory it names is missing or incomplete (lost
    by hand or by a disk), the newest complete ``step_*``; None when there is no complete checkpoint."""
    pointer = root / LATEST
    if pointer.is_file():
        path = root / pointer.read_text().strip()
        if _complete(path):
            return path
    complete = [p for p in sorted(root.glob("step_*")) if _complete(p)]
    return complete[-1] if complete else None


def _complete(path: Path) -> bool:
    return (path / STATE_FILE).is_file()


def load_checkpoint(path: Path) -> dict[str, Any]:
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    for value in state.values():
        if isinstance(value, ShardedPart):
            value.directory = path / value.subdir
    return state


def _write_state(path: Path, state: dict[str, Any]) -> None:
    with path.open("wb") as f:
        recorder = _ErrorRecorder(f)
        try:
            torch.save(state, recorder)
        except RuntimeError as err:
            # torch reports a short write as "unexpected pos ..."; the OSError below it says why (ENOSPC).
            if recorder.error is not None:
                raise recorder.error from err
            raise
        f.flush()
        os.fsync(f.fileno())


class _ErrorRecorder:
    """A binary file that keeps the ``OSError`` of a failed write, which ``torch.save`` would otherwise hide."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.file.flush()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(root: Path, keep: int) -> None:
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in root.glob(".staging_*"):
        shutil.rmtree(leftover, ignore_errors=True)
