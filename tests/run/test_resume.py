"""Stopping and resuming a run: a SIGKILLed run resumed with --resume ends at exactly the parameters of an
uninterrupted run, and Ctrl-C stops cleanly with a resumable checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
import yaml
from conftest import loop_settings, subprocess_env, verity_command
from helpers.run_files import final_weights

from verity.config import load_config
from verity.loop import train
from verity.train.checkpoint import latest_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

STEPS = 20


def write_config(tiny_model_dir: Path, out_dir: Path, steps: int, **train: Any) -> Path:
    settings = loop_settings(tiny_model_dir, out_dir)
    settings["train"].update(steps=steps, lr=1e-2, **train)
    path = out_dir.parent / f"{out_dir.name}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def start_training(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        verity_command("train", str(config), "--quiet", *extra),
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(proc: subprocess.Popen, checkpoints: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while latest_checkpoint(checkpoints) is None:
        if proc.poll() is not None:
            pytest.fail(
                f"training exited with {proc.returncode} before its first checkpoint: {proc.stderr.read()}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint within the time limit")
        time.sleep(0.01)


def test_sigkill_then_resume_reaches_the_uninterrupted_parameters(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Exact equality: same thread count (1), same CPU kernels, and the checkpoint restores every random state."""
    reference = load_config(write_config(tiny_model_dir, tmp_path / "straight", STEPS))
    train(reference, quiet=True)

    config = write_config(tiny_model_dir, tmp_path / "killed", STEPS)
    cfg = load_config(config)
    proc = start_training(config)
    wait_for_checkpoint(proc, cfg.run_dir / "checkpoints")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = torch.load(latest_checkpoint(cfg.run_dir / "checkpoints") / "state.pt", weights_only=False)["step"]
    assert 1 <= killed_at < STEPS, "the kill must land mid-run"
    assert not (cfg.run_dir / "final_model").exists()

    resumed = subprocess.run(
        verity_command("train", str(config), "--quiet", "--resume"),
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((cfg.run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == STEPS
    rows = [row for row in map(json.loads, (cfg.run_dir / "metrics.jsonl").open()) if "loss/policy" in row]
    assert [row["step"] for row in rows] == list(range(1, STEPS + 1))  # the killed run's extra steps dropped
    times = [row["time"] for row in rows]
    assert times == sorted(times) and times[killed_at] > times[killed_at - 1]  # the time column goes on
    expected, got = final_weights(reference.run_dir), final_weights(cfg.run_dir)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), f"{name} differs after resume"
    assert (
        summary["eval_after"]["accuracy"]
        == json.loads((reference.run_dir / "summary.json").read_text())["eval_after"]["accuracy"]
    )


def test_ctrl_c_stops_cleanly_and_resume_finishes(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_config(tiny_model_dir, tmp_path / "interrupted", 400)
    cfg = load_config(config)
    proc = start_training(config)
    wait_for_checkpoint(proc, cfg.run_dir / "checkpoints")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "resume with --resume" in stderr
    summary = json.loads((cfg.run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped" and 1 <= summary["steps"] < 400
    latest = latest_checkpoint(cfg.run_dir / "checkpoints")
    assert latest.name == f"step_{summary['steps']:07d}"  # the stop wrote a checkpoint of its last step

    finished = train(load_config(config, ["train.steps=" + str(summary["steps"] + 2)]), resume=True, quiet=True)
    assert finished["status"] == "finished" and finished["steps"] == summary["steps"] + 2
    assert (cfg.run_dir / "final_model" / "model.safetensors").is_file()


def test_fsdp2_sigkill_after_a_sharded_checkpoint_then_resume_reaches_the_uninterrupted_parameters(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Two learner ranks: the checkpoint's learner part is DCP shards in the atomic step directory. After the
    driver is SIGKILLed its ranks exit by themselves (their pipes close), and the resumed run ends bit for bit
    where an uninterrupted one does (gloo sums two ranks' gradients in a fixed order)."""
    fsdp = {"strategy": "fsdp2", "learners": 2}
    reference = load_config(write_config(tiny_model_dir, tmp_path / "straight", 4, **fsdp))
    train(reference, quiet=True)

    config = write_config(tiny_model_dir, tmp_path / "killed", 4, **fsdp)
    cfg = load_config(config)
    proc = start_training(config)
    wait_for_checkpoint(proc, cfg.run_dir / "checkpoints", timeout=120)
    ranks = psutil.Process(proc.pid).children(recursive=True)
    assert len([r for r in ranks if "spawn" in " ".join(r.cmdline())]) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    _, alive = psutil.wait_procs(ranks, timeout=30)
    assert not alive, "learner ranks outlived their driver"
    checkpoint = latest_checkpoint(cfg.run_dir / "checkpoints")
    assert 1 <= torch.load(checkpoint / "state.pt", weights_only=False)["step"] < 4
    assert (checkpoint / "learner" / ".metadata").is_file()

    resumed = subprocess.run(
        verity_command("train", str(config), "--quiet", "--resume"),
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((cfg.run_dir / "summary.json").read_text())["steps"] == 4
    expected, got = final_weights(reference.run_dir), final_weights(cfg.run_dir)
    assert expected.keys() == got.keys() and len(expected) > 0
    for name in expected:
        assert torch.equal(expected[name], got[name]), f"{name} differs after resume"
