"""Every command resolves a config as ``verity train`` does (``verity.cli.resolve``): ``init`` builds the base
``train`` builds, ``spark`` takes overrides wherever ``train`` does, and a data path given as an override is found
beside the config like the same value in the YAML."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import subprocess_env, verity_command

from verity.config import Config, load_config


def tiny_base_run(tmp_path: Path) -> Path:
    settings = {
        "name": "run",
        "output_dir": str(tmp_path / "runs"),
        "model": {
            "name": "tiny",
            "tiny": {
                "vocab_size": 300,
                "hidden_size": 16,
                "num_layers": 1,
                "num_heads": 2,
                "intermediate_size": 32,
            },
            "warmup": {"max_steps": 4, "batch_size": 4, "check_every": 2, "check_items": 4},
        },
        "data": {
            "tasks": [{"source": "generator", "name": "seven", "function": "helpers.loop_tasks:say_seven"}],
            "eval_items": 4,
        },
        "rollout": {"prompts_per_step": 2, "group_size": 2, "max_new_tokens": 3},
        "reward": {"verifiers": ["helpers.loop_tasks:share_of_sevens"], "in_process": True},
        "train": {"steps": 1},
        "eval": {"every": 0, "k": 1},
        "tracking": {"quiet": True},
        "runtime": {"device": "cpu"},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def digest(directory: Path) -> dict[str, str]:
    """The hash of every weight and config file of a base (its build record holds timings)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != "verity_base.json"
    }


@pytest.mark.slow
def test_init_builds_the_base_train_builds(tmp_path: Path) -> None:
    """Without runtime.threads and without OMP_NUM_THREADS both take the one-thread default for the tiny base, and
    the same key, seeds and held-out items: the same files."""
    config = tiny_base_run(tmp_path)
    env = {k: v for k, v in subprocess_env().items() if k != "OMP_NUM_THREADS"}
    init = subprocess.run(
        verity_command("init", str(config), f"model.cache_dir={tmp_path / 'by_init'}"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert init.returncode == 0, init.stderr
    by_init = Path(init.stdout.strip().splitlines()[-1])
    train = subprocess.run(
        verity_command("train", str(config), "--quiet", f"model.cache_dir={tmp_path / 'by_train'}"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert train.returncode == 0, train.stderr
    (by_train,) = [p for p in (tmp_path / "by_train").rglob("config.json") if p.parent.name == by_init.name]
    assert digest(by_init) == digest(by_train.parent)


def test_spark_takes_overrides_before_between_and_after_its_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import verity.recipes.spark.pipeline as pipeline
    from verity.cli.spark import cli_main

    seen: list[Config] = []

    def fake_run(cfg: Config, opts: object, out: Path) -> dict:
        seen.append(cfg)
        raise SystemExit(0)

    monkeypatch.setattr(pipeline, "run_spark", fake_run)
    config = tiny_base_run(tmp_path)
    for argv in (
        [str(config), "seed=3", "--prompts", "2"],
        [str(config), "--prompts", "2", "seed=3"],
        [str(config), "--prompts", "2", "seed=3", "--solutions", "2"],
    ):
        with pytest.raises(SystemExit):
            cli_main(argv)
        assert seen[-1].seed == 3, argv


def test_an_eval_path_override_is_found_beside_the_config_like_the_yaml_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "test.jsonl").write_text('{"prompt": "q", "answer": "7"}\n')
    task = {"source": "jsonl", "name": "qa", "path": "test.jsonl"}
    (project / "run.yaml").write_text(yaml.safe_dump({"data": {"tasks": [task]}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(project / "run.yaml", ["data.tasks.0.eval_path=test.jsonl"])
    assert cfg.data.tasks[0].eval_path == str(project / "test.jsonl")
    assert cfg.data.tasks[0].path == str(project / "test.jsonl")
    assert os.getcwd() == str(elsewhere)


def test_a_config_error_found_with_reward_workers_running_is_one_line_and_no_worker_traceback(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """fsdp2 refuses LoRA once the reward workers run (in their own processes): they are closed, not killed
    mid-read, so neither the terminal nor the run's log gets their ConnectionResetError tracebacks."""
    from conftest import loop_settings

    settings = loop_settings(tiny_model_dir, tmp_path / "runs")
    settings["reward"]["in_process"] = False
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(settings))
    done = subprocess.run(
        verity_command(
            "train", str(config), "--quiet", "train.strategy=fsdp2", "train.learners=2", "model.lora.r=8"
        ),
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("verity: train.strategy=fsdp2 does not support LoRA")
    assert done.stderr.count("\n") == 1 and not done.stdout
    assert "Traceback" not in (tmp_path / "runs" / "run" / "verity.log").read_text()


def test_a_hub_that_does_not_answer_is_one_error_within_model_hub_timeout_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    import huggingface_hub

    from verity.model.loading import check_hub_model
    from verity.schema import ConfigError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "model_info", lambda name, timeout: time.sleep(60))
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"did not answer within 0.5 s \(model.hub_timeout_s\)"):
        check_hub_model("someone/some-model", timeout_s=0.5)
    assert time.monotonic() - started < 5


def test_a_busy_run_directory_is_refused_before_the_training_code_is_imported(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import sys

    from conftest import loop_settings

    from verity.run.lock import RunLock

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(loop_settings(tiny_model_dir, tmp_path / "runs")))
    (tmp_path / "runs" / "run").mkdir(parents=True)
    lock = RunLock(tmp_path / "runs" / "run")
    lock.acquire()
    try:
        probe = (
            "import sys; from verity.cli.main import main; "
            f"code = main(['train', {str(config)!r}]); print(code, 'verity.loop' in sys.modules)"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe], env=subprocess_env(), capture_output=True, text=True, timeout=120
        )
    finally:
        lock.release()
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert f"is in use by another verity process (pid {os.getpid()})" in done.stderr


def test_eval_of_a_missing_model_directory_and_merge_of_a_missing_base_are_one_line(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    from verity.cli.main import main

    assert main(["eval", str(tmp_path / "runs" / "nope" / "final_model")]) == 2
    assert capsys.readouterr().err.startswith("verity: model.name: no model directory at ")
    base = str(tmp_path / "no_base")
    assert main(["merge", str(tmp_path / "out"), "--base", base, str(tiny_model_dir), str(tiny_model_dir)]) == 1
    assert capsys.readouterr().err == f"verity merge: no such directory: --base {base}\n"
