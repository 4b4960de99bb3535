"""A short run through the real loop with every data option on: metrics reach metrics.jsonl and stages move."""

from __future__ import annotations

import json

import pytest

from verity.loop import train


@pytest.mark.slow
def test_run_with_stages_dynamic_sampling_visurf_and_relift(make_config, one_thread) -> None:
    cfg = make_config(
        "train.steps=4",
        "data.dynamic_sampling.enabled=true",
        "data.visurf=true",
        "data.relift.enabled=true",
        "data.relift.every=1",
        "data.reference_field=answer",
        "data.adaptive_group.enabled=true",
        "data.stages=[{name: short, steps: 2, max_new_tokens: 2}, {name: hard, hard_focus: {max_pass_rate: 1.0}}]",
    )
    train(cfg, quiet=True)
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "data/stage" in r]
    assert [r["data/stage"] for r in steps] == [0.0, 1.0, 1.0, 1.0]  # moved after two steps
    assert all(r["data/drawn_groups"] >= 4 and r["task/seven/share"] == 1.0 for r in steps)
    assert steps[0]["response_len/mean"] <= 2 + len("<answer>7</answer>") + 1  # short stage (references longer)


@pytest.mark.slow
def test_run_with_rethinking_and_expert_iteration(make_config, one_thread) -> None:
    cfg = make_config(
        "train.steps=4",
        "eval.threshold=0.25",
        "data.rethink.enabled=true",
        "data.rethink.every=1",
        "data.expert_iteration.enabled=true",
        "data.expert_iteration.every=2",
        "data.expert_iteration.max_pass_rate=1.0",
    )
    train(cfg, quiet=True)
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "rethink/failed_groups" in r]
    assert len(steps) == 4
    rescued = [r["rethink/decompose_rescued"] + r["rethink/reflect_rescued"] for r in steps]
    assert all(n <= r["rethink/failed_groups"] for n, r in zip(rescued, steps, strict=True))
    assert sum(rescued) > 0
    # SFT every step on what that step rescued (identical texts of one item are queued once).
    assert all(
        0 < r.get("rethink/items", 0) <= r["rethink/demonstrations"] or n == 0
        for n, r in zip(rescued, steps, strict=True)
    )
    expert = [r for r in steps if "expert_iteration/candidates" in r]
    assert [r["step"] for r in expert] == [4] and 0 < expert[0]["expert_iteration/items"] < 3
