"""A whole (short) RL run with an environment: the loop plays episodes, trains with TRLOO on their turns, logs
episode metrics and evaluates by episodes."""

from __future__ import annotations

import json

import pytest

from verity.loop import train


@pytest.mark.slow
def test_training_run_with_an_environment_and_trloo(make_config, one_thread):
    cfg = make_config(
        "env.name=env_fakes:CodeSum",
        "env.max_turns=3",
        "env.max_tokens=30",
        "env.turn_tokens=4",
        "algo.advantage=trloo",
        "train.steps=2",
    )
    summary = train(cfg, quiet=True)
    assert summary["status"] == "finished" and summary["steps"] == 2
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "env/turns" in row and "eval/accuracy" not in row]
    assert [row["step"] for row in steps] == [1, 2]
    for row in steps:
        assert 1.0 <= row["env/turns"] <= 3.0 and row["env/tool_rate"] == 0.0
        assert row["time/score"] == 0.0 and row["env/errors"] == 0.0
    for when in ("eval_before", "eval_after"):
        result = summary[when]
        assert result["items"] == 4 and 1.0 <= result["env/turns"] <= 3.0
