"""Failures and settings that used to stay silent: verifier failures reach the progress display and the summary
(and stop a run whose first step failed everywhere), settings that make learning impossible are warned about,
and each start-up mistake is one ``verity: ...`` line."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import loop_settings

from verity.cli.main import main
from verity.config import Config, load_config
from verity.loop import TrainingStopped, train
from verity.run.checks import (
    CollapseWatch,
    check_device,
    collapse_remedies,
    settings_warnings,
    unlogged_stage_metrics,
)
from verity.run.runs import read_summary
from verity.schema import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("verifier", "reason"),
    [
        ("helpers.loop_tasks:always_raises", "raised KeyError: 'answer_text'"),
        ("helpers.loop_tasks:nan_score", "returned float"),
    ],
)
def test_a_first_step_where_every_reward_fails_stops_the_run(
    make_config: Callable[..., Config], verifier: str, reason: str
) -> None:
    cfg = make_config(f"reward.verifiers=[{verifier}]")
    with pytest.raises(
        TrainingStopped, match=rf"every reward of step 1 failed \(16 of 16\), e\.g\. item .*{reason}"
    ):
        train(cfg, quiet=True)
    summary = read_summary(cfg.run_dir)
    assert summary["status"] == "failed" and summary["error"].startswith(
        "every reward of step 1 failed (16 of 16)"
    )


def test_some_failing_rewards_are_warned_about_in_the_summary(make_config: Callable[..., Config], capsys) -> None:
    summary = train(make_config("reward.verifiers=[helpers.loop_tasks:faulty]", "train.steps=2"), quiet=True)
    assert summary["status"] == "finished"
    first = [w for w in summary["warnings"] if "first reward failure" in w]
    assert len(first) == 1 and first[0].startswith("step 1: first reward failure, item seven/train/")
    # faulty fails on half the items (index % 4 in (1, 2)): 8 of 16 rewards.
    assert "step 1: 8 of 16 rewards failed and scored 0; reasons are in samples.jsonl" in summary["warnings"]
    assert "warning: step 1: first reward failure" in capsys.readouterr().err


def test_a_high_timeout_rate_is_warned_about(make_config: Callable[..., Config]) -> None:
    cfg = make_config(
        "reward.verifiers=[helpers.loop_tasks:hangs_on_odd_items]",
        "reward.in_process=false",
        "reward.timeout_s=0.3",
        "train.steps=1",
        "data.eval_items=2",
    )
    summary = train(cfg, quiet=True)
    assert any("rewards timed out (reward.timeout_s=0.3)" in w for w in summary["warnings"])


def test_settings_that_make_learning_impossible_are_warned_about() -> None:
    cfg = load_config({"rollout": {"group_size": 1}, "eval": {"threshold": math.nan}})
    warnings = settings_warnings(cfg)
    assert warnings[0].startswith(
        "rollout.group_size is 1 with algo.advantage=grpo, whose advantages need groups of at least 2"
    )
    assert warnings[1] == "eval.threshold is NaN: every comparison with it is false; give a number"
    assert (
        settings_warnings(load_config({"rollout": {"group_size": 1}, "algo": {"advantage": "single_rollout"}}))
        == []
    )


def test_stages_without_their_own_group_size_keep_the_runs_and_are_not_warned_about() -> None:
    stages = [{"name": "warm", "steps": 5}, {"name": "one", "group_size": 1}]
    warnings = settings_warnings(load_config({"data": {"stages": stages}}))
    assert len(warnings) == 1 and warnings[0].startswith("data.stages.1.group_size is 1 with algo.advantage=grpo")


def test_a_group_size_of_one_reaches_the_summary(make_config: Callable[..., Config]) -> None:
    summary = train(make_config("rollout.group_size=1", "train.steps=1"), quiet=True)
    assert any(w.startswith("rollout.group_size is 1 with algo.advantage=grpo") for w in summary["warnings"])


def test_a_stage_condition_on_a_metric_never_logged() -> None:
    cfg = load_config(
        {"data": {"stages": [{"name": "warm", "until": "task/chainsum/accuracy >= 0.8"}, {"name": "rest"}]}}
    )
    logged = ["accuracy", "task/chain_sum/accuracy"]
    assert unlogged_stage_metrics(cfg, logged) == [
        "data.stages.0.until: no step logs metric 'task/chainsum/accuracy', so stage 'warm' never ends by it "
        "(logged metrics like it: accuracy, task/chain_sum/accuracy)"
    ]
    assert unlogged_stage_metrics(cfg, ["task/chainsum/accuracy"]) == []


def test_devices_torch_cannot_use_fail_at_once() -> None:
    with pytest.raises(ConfigError, match=r"runtime.device: 'gpu' is not a device; use auto, cpu, cuda or cuda:N"):
        check_device("gpu")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ConfigError, match=r"runtime.device: 'cuda' asked for, but this torch .* sees no CUDA"):
            check_device("cuda")
    check_device("cpu")


def write_config(tmp_path: Path, settings: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "reward.verifiers=[no_such_module:score]",
            "verity: reward.verifiers: verifier 'no_such_module:score': cannot import module 'no_such_module'",
        ),
        (
            "reward.verifiers=[{name: accuracy, settings: {tol: 1}}]",
            "verity: reward.verifiers: verifier 'accuracy' (label 'accuracy') has no setting(s) ['tol']",
        ),
        ("runtime.device=cuda:x", "verity: runtime.device: 'cuda:x' is not a device"),
    ],
)
def test_start_up_mistakes_are_one_line(
    tmp_path: Path, tiny_model_dir: Path, capsys, override: str, message: str
) -> None:
    config = write_config(tmp_path, loop_settings(tiny_model_dir, tmp_path / "runs"))
    assert main(["train", str(config), override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_ctrl_c_while_building_leaves_a_run_that_starts_again(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import verity.loop

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    config = write_config(tmp_path, loop_settings(tiny_model_dir, tmp_path / "runs"))
    monkeypatch.setattr(verity.loop, "build_parts", interrupted)
    assert main(["train", str(config)]) == 130
    assert capsys.readouterr().err.startswith("verity: interrupted; every file written so far is complete")
    summary = json.loads((tmp_path / "runs" / "run" / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["steps"] == 0  # listed by verity runs, nothing to resume
    monkeypatch.undo()
    assert main(["train", str(config), "train.steps=1"]) == 0


def test_a_verifier_and_data_beside_the_config_resolve_from_another_directory(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "my_reward.py").write_text("def score(completion, answer, **fields):\n    return 1.0\n")
    (project / "qa.jsonl").write_text("".join(f'{{"prompt": "q{i}", "answer": "7"}}\n' for i in range(12)))
    settings = loop_settings(tiny_model_dir, tmp_path / "runs")
    settings["data"] = {"tasks": [{"source": "jsonl", "name": "qa", "path": "qa.jsonl"}], "eval_items": 2}
    settings["reward"] = {"verifiers": ["my_reward:score"], "in_process": True}
    settings["train"]["steps"] = 1
    config = project / "cfg.yaml"
    config.write_text(yaml.safe_dump(settings))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    monkeypatch.setenv("PYTHONPATH", "")
    assert load_config(config).data.tasks[0].path == str(project / "qa.jsonl")
    assert main(["train", str(config)]) == 0
    assert read_summary(tmp_path / "runs" / "run")["eval_after"]["accuracy"] == 1.0


def test_the_tiny_base_on_cpu_defaults_to_one_thread() -> None:
    import torch

    from verity.run.checks import apply_default_threads

    torch.set_num_threads(2)  # the one_thread fixture restores the count afterwards
    cpu = {"runtime": {"device": "cpu"}}
    assert apply_default_threads(load_config(cpu, ["runtime.threads=2"]), small_model=True) is None
    assert apply_default_threads(load_config(cpu), small_model=False) is None
    assert torch.get_num_threads() == 2
    assert apply_default_threads(load_config(cpu), small_model=True) == 1
    assert torch.get_num_threads() == 1


def test_stretching_a_decayed_cosine_schedule_states_the_learning_rate_of_the_added_steps() -> None:
    from verity.run.checks import schedule_extension

    cfg = load_config({"train": {"steps": 400, "lr_schedule": "cosine"}})
    (warning,) = schedule_extension(cfg, step=300, planned_steps=300)
    # 0.5 (1 + cos(pi 300/399)) = 0.144 at the first added step, 0 at the last.
    assert "the 100 steps from step 300 train at 0.049 x train.lr on average (0.144 down to 0.000)" in warning
    assert schedule_extension(load_config({"train": {"steps": 400}}), step=300, planned_steps=300) == []


def test_collapse_watch_warns_once_when_pass_at_k_falls_beyond_noise() -> None:
    watch = CollapseWatch(200, {"accuracy": 0.3, "pass@1": 0.2, "pass@4": 0.56}, "algo.advantage=pass_k")
    # sampling error of 0.56 on 200 items: sqrt(0.56 * 0.44 / 200) = 0.0351; the warning needs a fall above 0.0702
    assert watch.observe_eval(100, {"pass@1": 0.1, "pass@4": 0.50}) == []
    (warning,) = watch.observe_eval(200, {"pass@1": 0.1, "pass@4": 0.48})
    assert "pass@4 on held-out items fell from 0.560 to 0.480" in warning and "0.035" in warning
    assert watch.observe_eval(300, {"pass@4": 0.30}) == []  # said once
    assert "Try algo.advantage=pass_k" in warning


def test_collapse_remedies_fit_the_run() -> None:
    plain = collapse_remedies(load_config())
    assert plain.startswith("algo.advantage=pass_k") and "algo.entropy_coef" in plain
    # One update per batch keeps the PPO ratio at 1, where clip-higher cannot act: it is suggested only off-policy.
    assert "clip_high" not in plain
    assert "algo.clip_high above algo.clip_low" in collapse_remedies(load_config({}, ["train.epochs=2"]))
    pass_k = collapse_remedies(load_config({}, ["algo.advantage=pass_k", "algo.pass_k=4"]))
    assert pass_k.startswith("a larger algo.pass_k (now 4) or algo.pass_k_guard")


def test_collapse_watch_takes_its_reference_from_the_first_evaluation_and_watches_entropy() -> None:
    watch = CollapseWatch(100, None, "a remedy")
    assert watch.observe_eval(0, {"pass@8": 0.9}) == []
    assert watch.observe_eval(50, {"pass@8": 0.7})  # error 0.03: a fall of 0.2 is collapse
    steps = [watch.observe_step(s, {"entropy": e}) for s, e in enumerate([1.0, 1.2, 0.8, 1.0, 1.0, 0.2, 0.09])]
    assert steps[:6] == [[]] * 6  # five early steps set the mean (1.0); 0.2 is above a tenth of it
    assert "policy entropy fell to 0.0900" in steps[6][0]
