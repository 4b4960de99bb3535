"""Atomic checkpoints: round trip, pruning, and a write that dies at any point never leaves ``latest`` naming a
missing or partial checkpoint."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import verity.train.checkpoint as checkpoint_module
from verity.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


def state(step: int, size: int = 10) -> dict:
    return {"step": step, "weights": torch.full((size,), float(step)), "nested": {"name": f"s{step}"}}


def test_round_trip_and_latest(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    path = save_checkpoint(tmp_path, 7, state(7), keep=2)
    assert path == tmp_path / "step_0000007" and latest_checkpoint(tmp_path) == path
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and loaded["nested"] == {"name": "s7"}
    assert torch.equal(loaded["weights"], torch.full((10,), 7.0))


def test_keeps_the_newest(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, state(step), keep=2)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("step_")) == [
        "step_0000003",
        "step_0000004",
    ]
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 4


def test_pointer_to_a_missing_checkpoint_is_no_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "latest").write_text("step_0000009")
    assert latest_checkpoint(tmp_path) is None


@pytest.mark.parametrize("damage", ["pointer lost", "pointed-to directory lost", "pointed-to state lost"])
def test_a_lost_pointer_or_target_falls_back_to_the_newest_complete_one(tmp_path: Path, damage: str) -> None:
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, state(step), keep=3)
    (tmp_path / "step_0000004").mkdir()  # an incomplete directory is never chosen
    if damage == "pointer lost":
        (tmp_path / "latest").unlink()
        expected = 3
    elif damage == "pointed-to directory lost":
        shutil.rmtree(tmp_path / "step_0000003")
        expected = 2
    else:
        (tmp_path / "step_0000003" / "state.pt").unlink()
        expected = 2
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == expected


class Died(BaseException):
    """Stands for the process dying: nothing after it runs (BaseException skips ``except Exception``)."""


@pytest.mark.parametrize(("keep", "most"), [(1, 2), (2, 2), (3, 3)])
def test_writing_a_checkpoint_needs_room_for_keep_of_them_not_one_more(
    tmp_path: Path, monkeypatch, keep: int, most: int
) -> None:
    """With keep_checkpoints 2, a nearly full disk that holds two checkpoints can write the next one."""
    on_disk = []
    real_write = checkpoint_module._write_state

    def counting(path: Path, state: dict) -> None:
        on_disk.append(len([p for p in tmp_path.glob("step_*")]) + 1)  # + the one being written
        real_write(path, state)

    monkeypatch.setattr(checkpoint_module, "_write_state", counting)
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, state(step), keep=keep)
    assert max(on_disk) == most
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 5
    assert len(list(tmp_path.glob("step_*"))) == keep


def test_death_while_writing_the_state_keeps_the_previous_latest(tmp_path: Path, monkeypatch) -> None:
    save_checkpoint(tmp_path, 1, state(1), keep=3)
    real_save = torch.save

    def half_written(obj, f) -> None:
        f.write(b"PK\x03\x04 partial")
        raise Died

    monkeypatch.setattr(checkpoint_module.torch, "save", half_written)
    with pytest.raises(Died):
        save_checkpoint(tmp_path, 2, state(2), keep=3)
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 1
    assert not (tmp_path / "step_0000002").exists()
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    save_checkpoint(tmp_path, 3, state(3), keep=3)  # the next save clears the dead write's leftovers
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".staging")]


def test_death_before_the_pointer_moves_keeps_the_previous_latest(tmp_path: Path, monkeypatch) -> None:
    save_checkpoint(tmp_path, 1, state(1), keep=3)
    real_replace = os.replace

    def replace(src, dst) -> None:
        if Path(dst).name == "latest":
            raise Died
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", replace)
    with pytest.raises(Died):
        save_checkpoint(tmp_path, 2, state(2), keep=3)
    assert (tmp_path / "latest").read_text() == "step_0000001"
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 1


SAVE_LOOP = """
import sys, torch
from pathlib import Path
from verity.train.checkpoint import save_checkpoint
root = Path(sys.argv[1])
for step in range(1, 10_000):
    state = {"step": step, "weights": torch.full((2_000_000,), float(step))}
    save_checkpoint(root, step, state, keep=2)
    print(step, flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.05, 0.13, 0.29])
def test_sigkill_at_any_moment_leaves_a_complete_latest(tmp_path: Path, delay: float) -> None:
    """A process saving 8 MB checkpoints back to back is killed at an arbitrary moment after its first save."""
    proc = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "1"
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    latest = latest_checkpoint(tmp_path)
    assert latest is not None
    loaded = load_checkpoint(latest)
    assert latest.name == f"step_{loaded['step']:07d}"
    assert torch.equal(loaded["weights"], torch.full((2_000_000,), float(loaded["step"])))
