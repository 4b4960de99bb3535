"""Ctrl-C at each moment of a run, sent to the driver alone (``kill -INT``) and to its whole process group (a
terminal's Ctrl-C): the command exits with 130 and one ``verity:`` line, the summary says "stopped", no process
it started outlives it, and a run stopped after a checkpoint resumes."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import loop_settings, subprocess_env, tiny_llama, verity_command

from verity.config import load_config
from verity.run.console import children
from verity.train.checkpoint import latest_checkpoint

pytestmark = [pytest.mark.slow]


def start(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        verity_command("train", str(config), "--quiet", *extra),
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives a command
    )


def wait_until(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"training exited with {proc.returncode} too early: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the moment to interrupt never came")
        time.sleep(0.05)


def interrupt(proc: subprocess.Popen, target: str) -> tuple[int, str, list[int]]:
    """Ctrl-C to the driver or its process group; the exit code, stderr and the driver's processes then."""
    started = children(proc.pid)
    if target == "group":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the interrupted run did not end within 90 s")
    return proc.returncode, stderr, started


def assert_stopped(returncode: int, stderr: str, started: list[int], run_dir: Path) -> None:
    assert returncode == 130, stderr
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("step ")]  # progress lines
    assert len(lines) == 1 and lines[0].startswith("verity: "), stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "stopped"
    deadline = time.monotonic() + 10
    while alive(started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(started), f"processes outlived the run: {alive(started)}"


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.append(pid)
    return out


def write_config(model_dir: Path, tmp_path: Path, steps: int, **rollout: str) -> Path:
    settings = loop_settings(model_dir, tmp_path / "runs")
    settings["train"]["steps"] = steps
    settings["rollout"].update(rollout)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.mark.parametrize("target", ["driver", "group"])
def test_ctrl_c_during_start_up_stops_at_once_and_the_same_command_starts_over(
    tiny_model_dir: Path, tmp_path: Path, target: str
) -> None:
    config = write_config(tiny_model_dir, tmp_path, 400)
    run_dir = load_config(config).run_dir
    proc = start(config)
    wait_until(proc, lambda: (run_dir / "verity.log").is_file())  # the run directory is taken: start-up
    assert_stopped(*interrupt(proc, target), run_dir)
    assert latest_checkpoint(run_dir / "checkpoints") is None
    again = subprocess.run(
        verity_command("train", str(config), "--quiet", "train.steps=1"),
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert again.returncode == 0, again.stderr  # nothing to resume: the same command starts the run over
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("target", ["driver", "group"])
def test_ctrl_c_during_the_steps_writes_a_checkpoint_and_resumes(
    tiny_model_dir: Path, tmp_path: Path, target: str
) -> None:
    config = write_config(tiny_model_dir, tmp_path, 400)
    run_dir = load_config(config).run_dir
    proc = start(config)
    wait_until(proc, lambda: latest_checkpoint(run_dir / "checkpoints") is not None)
    assert_stopped(*interrupt(proc, target), run_dir)
    steps = json.loads((run_dir / "summary.json").read_text())["steps"]
    assert latest_checkpoint(run_dir / "checkpoints").name == f"step_{steps:07d}"
    resumed = subprocess.run(
        verity_command("train", str(config), "--quiet", "--resume", f"train.steps={steps + 1}"),
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "warning" not in resumed.stderr  # a resume after a Ctrl-C is no mishap
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == steps + 1


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (docs/vllm.md)")
@pytest.mark.parametrize("target", ["driver", "group"])
def test_ctrl_c_during_vllm_start_up_stops_the_run_and_its_engine(
    char_tokenizer, tmp_path: Path, target: str
) -> None:
    """vLLM's start-up swallows the driver's KeyboardInterrupt (pyzmq) and, on a group Ctrl-C, its engine
    process prints its tracebacks: still one line, exit 130, and no engine process left."""
    model_dir = tmp_path / "model64"
    tiny_llama(char_tokenizer, hidden_size=64).save_pretrained(model_dir)
    char_tokenizer.save_pretrained(model_dir)
    config = write_config(model_dir, tmp_path, 30, engine="vllm")
    run_dir = load_config(config).run_dir
    proc = start(config)
    engine_started = lambda: any(  # noqa: E731
        "EngineCore" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
        for pid in alive(children(proc.pid))
    )
    wait_until(proc, engine_started)
    time.sleep(2)
    assert_stopped(*interrupt(proc, target), run_dir)
    assert "Traceback" in (run_dir / "verity.log").read_text() or target == "driver"
