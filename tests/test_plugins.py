"""A user's estimator and engine, named by import path, train through the real loop; Verity never names them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import user_plugins
from safetensors.torch import load_file

from verity.algo.config import AlgoConfig
from verity.algo.objective import advantage_inputs, compute_advantages
from verity.build import build_parts
from verity.loop import rl_step, train
from verity.run.runs import read_metrics
from verity.schema import ConfigError
from verity.train.checkpoint import latest_checkpoint


def test_a_user_estimator_gets_exactly_the_inputs_it_declares() -> None:
    cfg = AlgoConfig(advantage="helpers.user_plugins:above_task_mean")
    assert advantage_inputs(cfg) == {"tasks"}
    rewards, groups, mask = torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([0, 0, 1, 1]), torch.ones(4, 2)
    adv = compute_advantages(cfg, rewards, groups, mask, tasks=["a", "a", "b", "b"])
    assert adv[:, 0].tolist() == [0.5, -0.5, 0.0, 0.0]  # reward minus its task's mean, on every token


def test_a_user_estimator_and_engine_train_two_steps(make_config) -> None:
    user_plugins.CALLS.update(estimator=[], generate=[], load_weights=[])
    cfg = make_config(
        "algo.advantage=helpers.user_plugins:above_task_mean",
        "rollout.engine=helpers.user_plugins:build_recording_engine",
    )
    parts = build_parts(cfg, lambda message: None)
    before = [p.detach().clone() for p in parts.learner.model.parameters()]
    try:
        for _ in range(2):
            metrics, _ = rl_step(parts)
            assert metrics["skipped"] == 0.0
    finally:
        parts.runtime.close()
    assert user_plugins.CALLS["generate"] == [(4, 4), (4, 4)]  # prompts_per_step x group_size, each step
    assert user_plugins.CALLS["load_weights"] == [1, 2]  # the sync after each update
    calls = user_plugins.CALLS["estimator"]
    assert len(calls) == 2 and calls[0]["tasks"] == ["seven"] * 16
    assert calls[0]["values"] is None and calls[0]["turns"] is None  # undeclared inputs are not computed
    moved = [not torch.equal(b, p) for b, p in zip(before, parts.learner.model.parameters(), strict=True)]
    assert any(moved)


def test_a_wrong_import_path_is_a_located_config_error(make_config) -> None:
    with pytest.raises(ConfigError, match=r"algo.advantage: .*has no callable 'above_tsk_mean'.*above_task_mean"):
        make_config("algo.advantage=helpers.user_plugins:above_tsk_mean")
    with pytest.raises(ConfigError, match=r"decorate it with verity.algo.contract.advantage_estimator"):
        make_config("algo.advantage=helpers.user_plugins:build_recording_engine")


def test_a_stateful_user_estimator_is_checkpointed_and_a_resumed_run_equals_an_uninterrupted_one(
    make_config, one_thread
) -> None:
    estimator = ["algo.advantage=helpers.user_plugins:drifting_baseline", "algo.drift_decay=0.25", "train.lr=1e-2"]
    whole = train(make_config(*estimator, "train.steps=4", "name=whole"), quiet=True)
    train(make_config(*estimator, "train.steps=2", "name=halves"), quiet=True)
    halves = train(make_config(*estimator, "train.steps=4", "name=halves"), resume=True, quiet=True)
    rows = {
        name: read_metrics(Path(summary["final_model"]).parent)
        for name, summary in (("whole", whole), ("halves", halves))
    }
    drift = {name: [row["drift/baseline"] for row in rows[name] if "drift/baseline" in row] for name in rows}
    assert drift["whole"] == drift["halves"] and len(drift["whole"]) == 4
    assert drift["whole"][1] != drift["whole"][0]  # the state moves with every step
    state = torch.load(
        latest_checkpoint(Path(halves["final_model"]).parent / "checkpoints") / "state.pt", weights_only=False
    )
    assert state["algo"]["estimator"] == {"value": drift["halves"][-1], "steps": 4}
    final = {
        name: load_file(Path(s["final_model"]) / "model.safetensors")
        for name, s in (("whole", whole), ("halves", halves))
    }
    assert all(torch.equal(final["whole"][key], final["halves"][key]) for key in final["whole"])


def test_a_user_estimators_settings_are_its_own(make_config) -> None:
    with pytest.raises(ConfigError, match=r"algo.drift_decay: Input should be less than 1"):
        make_config("algo.advantage=helpers.user_plugins:drifting_baseline", "algo.drift_decay=1.5")
    with pytest.raises(ConfigError, match=r"unknown key 'algo.drift_decay'"):
        make_config("algo.drift_decay=0.5")
