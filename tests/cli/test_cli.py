"""The ``verity`` command line: instant help, bad input exits 2 with the message, and ``verity eval``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import loop_settings, sevens_model, single_thread, subprocess_env

from verity.cli.main import main

HELP_PROBE = """
import sys
from verity.cli.main import main
try:
    main(["--help"])
except SystemExit as exit:
    print("exit", exit.code, "torch loaded", "torch" in sys.modules)
"""


def test_help_lists_commands_without_importing_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-c", HELP_PROBE], env=subprocess_env(), capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip().endswith("exit 0 torch loaded False")
    for command in ("train", "eval", "init", "plot", "report", "runs"):
        assert command in out.stdout


def write_config(tmp_path: Path, settings: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def test_train_with_an_unknown_key_exits_2(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    settings = loop_settings(tiny_model_dir, tmp_path / "runs")
    settings["train"]["stpes"] = 3
    config = write_config(tmp_path, settings)
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"verity: invalid configuration:\n  {config}:")
    assert "unknown key 'train.stpes'; did you mean 'train.steps'?" in err
    assert not (tmp_path / "runs").exists()


def test_train_with_a_bad_override_exits_2(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    config = write_config(tmp_path, loop_settings(tiny_model_dir, tmp_path / "runs"))
    assert main(["train", str(config), "rollout.top_p=2"]) == 2
    assert "rollout.top_p: Input should be less than or equal to 1 (got 2)" in capsys.readouterr().err


def test_train_with_a_missing_model_exits_2(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    config = write_config(tmp_path, loop_settings(tiny_model_dir, tmp_path / "runs"))
    with single_thread():
        code = main(["train", str(config), f"model.name={tmp_path / 'no_such_model'}"])
    assert code == 2
    assert f"model.name: no model directory at {tmp_path / 'no_such_model'}" in capsys.readouterr().err


def test_train_with_a_missing_data_file_exits_2(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    settings = loop_settings(tiny_model_dir, tmp_path / "runs")
    settings["data"]["tasks"] = [{"source": "jsonl", "name": "qa", "path": str(tmp_path / "qa.jsonl")}]
    assert main(["train", str(write_config(tmp_path, settings))]) == 2
    err = capsys.readouterr().err
    assert "data.tasks[qa].path" in err and str(tmp_path / "qa.jsonl") in err


@pytest.mark.usefixtures("one_thread")
def test_eval_writes_accuracy(tmp_path: Path, tiny_model_dir: Path, char_tokenizer, capsys) -> None:
    """The sevens policy answers every held-out item with 7s (reward 1); the untrained one never does."""
    sevens_dir = tmp_path / "sevens"
    sevens_model(char_tokenizer).save_pretrained(sevens_dir)
    char_tokenizer.save_pretrained(sevens_dir)
    config = write_config(tmp_path, loop_settings(tiny_model_dir, tmp_path / "runs"))
    out = tmp_path / "result.json"
    assert main(["eval", str(sevens_dir), str(config), "eval.k=2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["accuracy"], result["items"], result["task/seven/accuracy"]) == (1.0, 4, 1.0)
    assert 0.0 <= result["pass@1"] <= result["pass@2"] <= 1.0
    assert str(out) in capsys.readouterr().out
    assert main(["eval", str(tiny_model_dir), str(config), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["accuracy"] == 0.0


@pytest.mark.usefixtures("one_thread")
def test_eval_takes_a_task_and_several_k_without_a_config(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "result.json"
    task = 'chain_sum:{"min_terms": 2, "max_terms": 2}'
    argv = ["eval", str(tiny_model_dir), "--task", task, "--k", "1,2,4", "data.eval_items=3", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["items"] == 3
    assert {"pass@1", "pass@2", "pass@4", "maj@4"} <= set(result)
    assert [s["task"] for s in result["samples"]] == ["chain_sum"] * 3
    assert all(s["prompt"].count("+") + s["prompt"].count("-") == 1 for s in result["samples"])
    # pass@k never falls as k grows.
    assert result["pass@1"] <= result["pass@2"] <= result["pass@4"] <= 1.0


def test_eval_rejects_a_malformed_k(tiny_model_dir: Path) -> None:
    with pytest.raises(SystemExit, match="--k '1,x'"):
        main(["eval", str(tiny_model_dir), "--k", "1,x"])


def test_plot_report_and_runs_dispatch_from_the_main_command(tmp_path: Path, capsys) -> None:
    from helpers.run_files import write_run

    run = write_run(tmp_path, name="tiny")
    assert main(["runs", str(tmp_path)]) == 0
    assert "tiny" in capsys.readouterr().out
    assert main(["report", str(run)]) == 0
    assert "<html" in (run / "report.html").read_text().lower()
    assert main(["plot", str(run), "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "reward.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("command", ["plot", "report", "runs"])
def test_help_of_each_command_is_its_own(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: verity {command}")


def test_plot_takes_out_before_the_runs_and_refuses_a_non_run(tmp_path: Path, capsys) -> None:
    from helpers.run_files import write_run

    run = write_run(tmp_path, name="tiny")
    assert main(["plot", "--out", str(tmp_path / "figs"), str(run)]) == 0
    assert (tmp_path / "figs" / "reward.png").is_file()
    not_a_run = tmp_path / "notes"
    not_a_run.mkdir()
    assert main(["plot", str(not_a_run)]) == 1
    assert "no metrics.jsonl here; is this a run directory?" in capsys.readouterr().err
    assert not (not_a_run / "plots").exists()
    assert main(["report", str(not_a_run)]) == 1
    assert "verity report: " in capsys.readouterr().err
    assert not (not_a_run / "report.html").exists()


def test_train_without_a_config_says_it_needs_one(capsys) -> None:
    assert main(["train"]) == 2
    assert capsys.readouterr().err == (
        "verity: train needs a config file, e.g. verity train examples/quickstart.yaml\n"
    )


def test_eval_task_without_settings_keeps_the_config_settings_for_that_task(tmp_path: Path) -> None:
    from verity.cli.main import _eval_overrides, _parser
    from verity.config import load_config

    settings = {"data": {"tasks": [{"source": "reasoning_gym", "name": "chain_sum", "kwargs": {"min_terms": 2}}]}}
    cfg = load_config(settings)
    args = _parser().parse_args(["eval", "model", "--task", "chain_sum", "--task", 'basic_arithmetic:{"x": 1}'])
    tasks = load_config(settings, _eval_overrides(args, cfg)).data.tasks
    assert [(t.name, t.kwargs) for t in tasks] == [("chain_sum", {"min_terms": 2}), ("basic_arithmetic", {"x": 1})]


def test_dry_run_prints_the_config_and_rendered_prompts_without_training(
    tmp_path: Path, tiny_model_dir: Path, capsys
) -> None:
    settings = loop_settings(tiny_model_dir, tmp_path / "runs")
    settings["data"]["system_prompt"] = "Answer with sevens."
    assert main(["train", str(write_config(tmp_path, settings)), "--dry-run", "rollout.group_size=3"]) == 0
    out = capsys.readouterr().out
    assert "  group_size: 3\n" in out
    assert "--- seven/train/0 (answer: '7')\n<|system|>Answer with sevens.<|im_end|><|user|>7?0:0<|im_end|>" in out
    assert not (tmp_path / "runs").exists()
