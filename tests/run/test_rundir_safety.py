"""Run directories: one writer at a time, no silent replacement, the last step checkpointed, resume that truncates
the logs and keeps the settings, a dead run told apart from a running one, and a full disk reported cleanly."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from verity.cli.main import main
from verity.config import Config, load_config
from verity.loop import train
from verity.run.lock import RunLock
from verity.run.rundir import RunDir, config_changes
from verity.run.runs import describe_run
from verity.schema import ConfigError
from verity.train.checkpoint import latest_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def write_run_files(run_dir: Path, status: str, steps: int) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({"name": "run", "status": status, "steps": steps}))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 0, "time": 0.0, "eval/accuracy": 0.5}) + "\n")


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(make_config: Callable[..., Config]) -> None:
    cfg = make_config()
    first = RunDir(cfg)
    first.prepare(resume=False)
    with pytest.raises(ConfigError, match=r"is in use by another verity process \(pid \d+\)"):
        RunDir(cfg).prepare(resume=False)
    first.lock.release()
    second = RunDir(cfg)
    second.prepare(resume=False)  # free again once released
    second.lock.release()


def test_a_new_run_never_replaces_a_finished_one_without_checkpoints(make_config: Callable[..., Config]) -> None:
    cfg = make_config()
    write_run_files(cfg.run_dir, "finished", 3)
    before = (cfg.run_dir / "metrics.jsonl").read_text()
    with pytest.raises(
        ConfigError,
        match=r"already holds a run \(status finished, 3 steps\): it has no checkpoint to resume from: choose",
    ):
        RunDir(cfg).prepare(resume=False)
    assert (cfg.run_dir / "metrics.jsonl").read_text() == before
    assert json.loads((cfg.run_dir / "summary.json").read_text())["status"] == "finished"


def test_truncate_logs_drops_rows_after_the_checkpoint_and_returns_the_time(
    make_config: Callable[..., Config],
) -> None:
    cfg = make_config()
    cfg.run_dir.mkdir(parents=True)
    rows = [{"step": s, "time": 1.5 * s, "reward/mean": 0.1} for s in range(6)]
    (cfg.run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "ti')
    samples = [{"step": s, "completion": "7"} for s in (2, 4)]
    (cfg.run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples))
    assert RunDir(cfg).truncate_logs(3) == 4.5
    kept = [json.loads(line)["step"] for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert kept == [0, 1, 2, 3]
    assert [json.loads(line)["step"] for line in (cfg.run_dir / "samples.jsonl").open()] == [2]


def test_the_last_step_is_checkpointed_and_a_finished_run_can_be_extended(
    make_config: Callable[..., Config],
) -> None:
    cfg = make_config("train.checkpoint_every=50", "train.lr_schedule=cosine", "train.steps=2")
    assert train(cfg, quiet=True)["status"] == "finished"
    assert latest_checkpoint(cfg.run_dir / "checkpoints").name == "step_0000002"
    with pytest.raises(ConfigError, match=r"finished all 2 steps; to train it further, raise train.steps"):
        train(cfg, resume=True, quiet=True)
    with pytest.raises(ConfigError, match=r"train.steps=1 is below the 2 steps .* has done"):
        train(make_config("train.checkpoint_every=50", "train.lr_schedule=cosine", "train.steps=1"), resume=True)

    config_before = (cfg.run_dir / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"settings differ from .*: rollout\.group_size \(4 -> 2\)\. A resumed"):
        train(
            make_config(
                "train.checkpoint_every=50", "train.lr_schedule=cosine", "train.steps=3", "rollout.group_size=2"
            ),
            resume=True,
            quiet=True,
        )
    assert (cfg.run_dir / "config.yaml").read_text() == config_before

    extended = train(
        make_config("train.checkpoint_every=50", "train.lr_schedule=cosine", "train.steps=3", "eval.k=2"),
        resume=True,
        quiet=True,
    )
    assert (extended["status"], extended["steps"]) == ("finished", 3)
    # Recomputed for 3 steps, the cosine reaches 0 at optimizer step 2: the one added step trains at lr 0.
    assert (
        "train.steps changed from 2 to 3 on resume with a cosine schedule, recomputed for 3 steps: the 1 steps "
        "from step 2 train at 0.000 x train.lr on average (0.000 down to 0.000)" in " ".join(extended["warnings"])
    )
    train_rows = [r for r in map(json.loads, (cfg.run_dir / "metrics.jsonl").open()) if "loss/policy" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3]
    assert yaml.safe_load((cfg.run_dir / "config.yaml").read_text())["train"]["steps"] == 3


def test_runs_tells_a_dead_run_from_a_running_one(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_run_files(run_dir, "running", 4)
    (run_dir / ".lock").write_text("12345")
    assert describe_run(run_dir).status == "dead"
    lock = RunLock(run_dir)
    lock.acquire()
    try:
        assert describe_run(run_dir).status == "running"
    finally:
        lock.release()


def test_a_full_disk_while_checkpointing_is_one_line_and_leaves_nothing_half_written(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import loop_settings

    import verity.train.checkpoint as checkpoint

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", no_space)
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(loop_settings(tiny_model_dir, tmp_path / "runs")))
    assert main(["train", str(config)]) == 1
    err = capsys.readouterr().err.splitlines()[-1]  # progress lines come first
    assert err.startswith("verity: writing the checkpoint of step 1 under ")
    assert err.endswith(
        "(No space left on device); no checkpoint was kept, so there is nothing to resume: free space (or fix the "
        "directory) and start the run again"
    )
    run_dir = tmp_path / "runs" / "run"
    assert not list((run_dir / "checkpoints").glob(".staging_*"))
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"


def test_a_key_added_since_the_run_started_is_not_a_change(tmp_path: Path) -> None:
    """A config.yaml written before a setting existed resumes: the setting counts at its default."""
    cfg = load_config({"name": "r", "output_dir": str(tmp_path)})
    saved = cfg.model_dump(mode="json")
    del saved["model"]["warmup"]["min_gain_over_majority"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(saved))
    assert config_changes(path, cfg) == []
    assert config_changes(path, load_config({"name": "r", "output_dir": str(tmp_path), "seed": 3})) == [
        "seed (0 -> 3)"
    ]
