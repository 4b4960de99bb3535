"""Recovery of an async Ray run under faults: one run whose rollout actor and reward actor are killed while they
hold work and whose driver is SIGKILLed four times (while groups are generating, during a weight sync, while it
writes a checkpoint, and at a random moment), each time resumed with --resume. It ends finished, with every
drawn item trained on exactly once or still queued in the last checkpoint, within the staleness bound, and with
a summary that counts the restarts.

Each driver runs in its own session with its own local cluster; Ray's processes stay in that session, so the
test finds (and, after a SIGKILL, ends) exactly the processes of that driver.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import loop_settings, subprocess_env

from verity.train.checkpoint import latest_checkpoint, load_checkpoint

pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]

STEPS = 12
PROMPTS, GROUP, MAX_STALENESS = 4, 4, 1
DRIVER = Path(__file__).with_name("chaos_driver.py")
# (faults of one driver, the checkpoint it is resumed from): actors die in steps 2 and 3, the driver in 4, 6 and 7.
LAUNCHES = [
    ("rollout_actor@2,reward_actor@3,inflight@4", 3),
    ("sync@6", 5),
    ("checkpoint@7", 6),
    ("random@8", None),  # killed somewhere in step 8 or a few steps later
    ("", None),
]


@pytest.fixture
def ray_tmp() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="vrec")  # short: Ray's socket paths must stay under ~107 characters
    yield path
    subprocess.run(["rm", "-rf", path], check=False, timeout=60)


def write_config(tiny_model_dir: Path, out_dir: Path) -> Path:
    settings = loop_settings(tiny_model_dir, out_dir)
    settings["train"].update(steps=STEPS, lr=1e-2)
    settings["rollout"].update(prompts_per_step=PROMPTS, group_size=GROUP)
    settings["tracking"].update(samples_every=1, samples_per_step=PROMPTS * GROUP)
    settings["algo"] = {"loss": "decoupled_ppo"}
    settings["runtime"].update(
        kind="ray",
        ray={
            "mode": "async",
            "max_staleness": MAX_STALENESS,
            "segment_tokens": 2,
            "num_cpus": 2,
            "object_store_mb": 80,
            "rollout_cpus": 0.5,
            "reward_cpus": 0.5,
            "threads": 1,
        },
    )
    path = out_dir.parent / "async.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def session_processes(sid: int) -> dict[int, str]:
    """Live (not zombie) processes of session ``sid``: pid -> name."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            name, fields = (entry / "stat").read_text().rsplit(")", 1)
        except (OSError, ValueError):
            continue
        state, session = fields.split()[0], int(fields.split()[3])
        if state != "Z" and session == sid:
            found[int(entry.name)] = name.split("(", 1)[1]
    return found


def end_session(sid: int) -> list[str]:
    """SIGKILL what is left of a driver's session (some of Ray's processes outlive a SIGKILLed driver for a
    while); returns their names."""
    left = session_processes(sid)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while session_processes(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not session_processes(sid), f"processes of driver {sid} survive SIGKILL"
    return sorted(left.values())


def run_driver(config: Path, faults: str, resume: bool, ray_tmp: str) -> tuple[int, str, list[str]]:
    """One driver to its end; returns its exit code, its stderr and the processes that outlived it."""
    env = {**subprocess_env(), "VERITY_FAULTS": faults, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
    command = [sys.executable, str(DRIVER), "train", str(config), "--quiet", *(["--resume"] if resume else [])]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, stderr = proc.communicate(timeout=240)
    finally:
        proc.kill()
        left = end_session(proc.pid)
    return proc.returncode, stderr, left


def rows_by_step(path: Path) -> dict[int, list[dict[str, Any]]]:
    """The rows of a JSON-lines file by step, in the order written (a resumed run writes again the steps after
    its checkpoint, so the last rows of a step are those of the driver that finished it; a kill can cut the
    last line of a killed driver)."""
    rows: dict[int, list[dict[str, Any]]] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        rows.setdefault(row["step"], []).append(row)
    return rows


def item_index(prompt: str) -> int:
    return int(re.fullmatch(r"7\?\d+:(\d+)", prompt).group(1))


def test_async_run_survives_killed_actors_and_driver(tiny_model_dir: Path, tmp_path: Path, ray_tmp: str) -> None:
    config = write_config(tiny_model_dir, tmp_path / "runs")
    run_dir = tmp_path / "runs" / "run"
    checkpoints = run_dir / "checkpoints"
    for launch, (faults, resumed_from) in enumerate(LAUNCHES):
        code, stderr, left = run_driver(config, faults, launch > 0, ray_tmp)
        if launch == len(LAUNCHES) - 1:
            assert code == 0, stderr
            assert not left, f"a driver that finished left processes behind: {left}"
        else:
            assert code == -signal.SIGKILL, f"launch {launch} ({faults}) was not killed: {stderr}"
        if resumed_from is not None:
            assert latest_checkpoint(checkpoints).name == f"step_{resumed_from:07d}"
        if faults == "checkpoint@7":
            assert (checkpoints / "step_0000007" / "state.pt").is_file()  # written, but latest never moved to it

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == STEPS
    assert summary["restarts"] == {"driver": 4, "rollout": 1, "reward": 1}
    warnings = summary["warnings"]
    assert any(w.startswith("step 2: rollout worker 0 died and was replaced") for w in warnings), warnings
    assert any(w.startswith("step 3: reward worker 0 died and was replaced") for w in warnings), warnings
    resumes = [w for w in warnings if w.startswith("resumed from the checkpoint of step")]
    assert resumes[:3] == [
        f"resumed from the checkpoint of step {step}: the previous driver was killed" for step in (3, 5, 6)
    ]
    last = re.fullmatch(r"resumed from the checkpoint of step (\d+): the previous driver was killed", resumes[-1])
    assert len(resumes) == 4 and last and 7 <= int(last.group(1)) <= STEPS, resumes
    # A valid run directory, whose last checkpoint holds all a resume needs.
    assert (run_dir / "final_model" / "model.safetensors").is_file()
    assert {"config.yaml", "metrics.jsonl", "samples.jsonl"} <= {p.name for p in run_dir.iterdir()}
    assert not list(checkpoints.glob(".staging_*")) and not (run_dir / ".final_model.tmp").exists()

    # No item lost or trained twice: the items of the steps as trained, plus those queued in the last checkpoint,
    # are exactly the items the sampler drew, each once.
    state = load_checkpoint(latest_checkpoint(checkpoints))
    assert state["step"] == STEPS
    assert {"learner", "sampler", "algo", "engine_generator", "runtime", "rng"} <= state.keys()
    samples = rows_by_step(run_dir / "samples.jsonl")  # every rollout of every step
    assert sorted(samples) == list(range(1, STEPS + 1))
    trained = [item_index(p) for rows in samples.values() for p in {r["prompt"] for r in rows[-PROMPTS * GROUP :]}]
    queued = [item_index(task.item.prompt) for task in state["runtime"]["queued"]]
    assert len(trained) == len(set(trained)) == STEPS * PROMPTS
    assert not set(trained) & set(queued)
    held_out = 4  # data.eval_items: the first items of the task's stream, which the sampler skips
    assert state["sampler"]["skipped"] == held_out
    assert sorted(trained + queued) == list(range(held_out, state["sampler"]["next"][0]))
    assert len(queued) <= MAX_STALENESS * PROMPTS

    # The staleness bound holds in every step, before and after each resume.
    rows = [row for rows in rows_by_step(run_dir / "metrics.jsonl").values() for row in rows]
    steps = {row["step"] for row in rows if "async/staleness_max" in row}
    assert steps == set(range(1, STEPS + 1))
    assert max(row["async/staleness_max"] for row in rows if "async/staleness_max" in row) <= MAX_STALENESS
    assert max(row.get("async/groups_outstanding", 0) for row in rows) <= (1 + MAX_STALENESS) * PROMPTS
