"""A full disk while writing a checkpoint, the final model or any other run file: the previous checkpoint stays
the one ``latest`` names and loads, nothing half-written is left behind, the error says what to do, and --resume
finishes."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import loop_settings

from verity.cli.main import main
from verity.config import load_config
from verity.loop import train
from verity.run.rundir import RunDir, RunDirError
from verity.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


class FullDisk:
    """A file on a disk with ``room`` bytes (or characters) left: the write that would pass it raises ENOSPC."""

    def __init__(self, file: Any, room: int) -> None:
        self.file = file
        self.room = room

    def write(self, data: Any) -> int:
        if len(data) > self.room:
            self.file.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def fill_disk_under(monkeypatch: pytest.MonkeyPatch, root: Path, room: int, writing: str = "wb") -> None:
    """Files opened under ``root`` in mode ``writing`` get ``room`` bytes before ENOSPC."""
    real_open = Path.open

    def open_on_full_disk(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        file = real_open(path, mode, *args, **kwargs)
        return FullDisk(file, room) if mode == writing and root in path.parents else file

    monkeypatch.setattr(Path, "open", open_on_full_disk)


def test_a_checkpoint_that_does_not_fit_leaves_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 1, {"weights": torch.arange(4.0)}, keep=1)
    fill_disk_under(monkeypatch, root, room=300)
    with pytest.raises(OSError) as failed:  # torch.save alone raises RuntimeError("... unexpected pos ...")
        save_checkpoint(root, 2, {"weights": torch.zeros(10_000)}, keep=1)
    assert failed.value.errno == errno.ENOSPC
    assert latest_checkpoint(root) == root / "step_0000001"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_0000001"]  # the partial write is gone
    assert torch.equal(load_checkpoint(root / "step_0000001")["weights"], torch.arange(4.0))


def test_a_latest_pointer_that_does_not_fit_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    """The state is written and renamed into place, then the ``latest`` pointer does not fit: the new directory
    and the pointer's temporary file are removed, and ``latest`` still names the previous checkpoint."""
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 1, {"weights": torch.arange(4.0)}, keep=2)
    fill_disk_under(monkeypatch, root, room=0, writing="w")
    with pytest.raises(OSError) as failed:
        save_checkpoint(root, 2, {"weights": torch.zeros(4)}, keep=2)
    assert failed.value.errno == errno.ENOSPC
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_0000001"]
    assert latest_checkpoint(root) == root / "step_0000001"


def test_a_final_model_that_does_not_fit_fails_the_run_and_resume_writes_it(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch, capsys, one_thread
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(loop_settings(tiny_model_dir, tmp_path / "runs")))
    cfg = load_config(config, ["train.steps=2"])

    def half_written(model: Any, tokenizer: Any, path: Path, mode: str) -> None:
        path.mkdir(parents=True)
        (path / "model.safetensors").write_bytes(b"\0" * 64)
        no_space()

    monkeypatch.setattr("verity.train.learner.save_policy", half_written)
    assert main(["train", str(config), "train.steps=2", "--quiet"]) == 1
    error = capsys.readouterr().err
    assert f"verity: writing the final model to {cfg.run_dir / '.final_model.tmp'} failed" in error
    assert "the checkpoint of the last step is intact" in error and "--resume" in error
    assert latest_checkpoint(cfg.run_dir / "checkpoints").name == "step_0000002"
    assert not (cfg.run_dir / "final_model").exists() and not (cfg.run_dir / ".final_model.tmp").exists()
    summary = json.loads((cfg.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["final_model"] is None

    monkeypatch.undo()
    resumed = train(cfg, resume=True, quiet=True)
    assert resumed["status"] == "finished" and resumed["steps"] == 2
    assert resumed["restarts"]["driver"] == 1
    assert resumed["warnings"][-1] == (
        "resumed from the checkpoint of step 2: the previous driver ended with status 'failed'"
    )
    assert (cfg.run_dir / "final_model" / "model.safetensors").stat().st_size > 64


def test_a_summary_that_does_not_fit_hides_no_error(make_config, monkeypatch, one_thread) -> None:
    """The final model fails, and so does the closing summary: the error raised is still the final model's."""
    cfg = make_config("train.steps=1")
    monkeypatch.setattr("verity.train.learner.save_policy", no_space)
    write_summary = RunDir.write_summary

    def summary_unless_failed(run: RunDir, summary: dict[str, Any]) -> None:
        if summary["status"] == "failed":
            no_space()
        write_summary(run, summary)

    monkeypatch.setattr(RunDir, "write_summary", summary_unless_failed)
    with pytest.raises(RunDirError, match="writing the final model"):
        train(cfg, quiet=True)
    assert json.loads((cfg.run_dir / "summary.json").read_text())["status"] == "running"


def no_space(*args: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_under_any_run_file_says_what_is_intact(make_config, monkeypatch, one_thread) -> None:
    """Step 2's summary does not fit after its checkpoint did: the run stops with the file named and the
    checkpoint of step 2 said to be intact."""
    cfg = make_config("train.steps=3")
    write_summary = RunDir.write_summary

    def summary_until_step_2(run: RunDir, summary: dict[str, Any]) -> None:
        if summary["steps"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(run.path / ".summary.json.tmp"))
        write_summary(run, summary)

    monkeypatch.setattr(RunDir, "write_summary", summary_until_step_2)
    with pytest.raises(RunDirError) as failed:
        train(cfg, quiet=True)
    assert str(failed.value) == (
        f"writing {cfg.run_dir / '.summary.json.tmp'} failed (No space left on device); the last checkpoint "
        "(step_0000002) is intact; free space and continue with --resume"
    )
