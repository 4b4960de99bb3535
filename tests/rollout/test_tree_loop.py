"""Tree search as a config choice of the one loop: config errors, a short run with its metrics, and the replay
buffer in the run's checkpoint."""

import json
from collections.abc import Callable

import pytest
import torch

from verity.config import Config
from verity.loop import train
from verity.rollout.replay import CachedSolution
from verity.schema import ConfigError
from verity.train.checkpoint import latest_checkpoint


def test_tree_runs_in_the_local_runtime_only(make_config: Callable[..., Config]) -> None:
    with pytest.raises(ConfigError, match=r"rollout\.strategy=tree runs in runtime\.kind=local only"):
        make_config("rollout.strategy=tree", "runtime.kind=ray")


def test_tree_is_single_turn(make_config: Callable[..., Config]) -> None:
    with pytest.raises(ConfigError, match=r"rollout\.strategy=tree is for single-turn tasks"):
        make_config("rollout.strategy=tree", "env.name=calculator")


@pytest.mark.usefixtures("one_thread")
def test_a_tree_run_trains_logs_tree_metrics_and_checkpoints_its_buffer(
    make_config: Callable[..., Config],
) -> None:
    # Rewards are the share of 7s: with eval.threshold 0.25 a tiny random policy solves a few paths.
    cfg = make_config(
        "rollout.strategy=tree",
        "rollout.tree.width=2",
        "rollout.tree.step_tokens=1",
        "rollout.tree.replay.threshold=1.0",
        "algo.advantage=tree_grpo",
        "eval.threshold=0.25",
    )
    summary = train(cfg, quiet=True)
    assert summary["status"] == "finished"
    rows = [line for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines() if '"tree/nodes"' in line]
    assert len(rows) == cfg.train.steps
    assert not [key for key in json.loads(rows[-1]) if key.startswith("env/")]  # tree steps are not episodes
    state = torch.load(latest_checkpoint(cfg.run_dir / "checkpoints") / "state.pt", weights_only=False)
    entries = state["runtime"]["replay"]["entries"]
    assert len(entries) == json.loads(rows[-1])["tree/buffer_size"]
    for key, tokens, text in entries:
        assert key.startswith("seven\n") and text.count("7") / len(text) >= 0.25 and tokens


def test_the_local_runtime_carries_the_buffer_through_its_state(make_config: Callable[..., Config]) -> None:
    from verity.build import build_parts

    parts = build_parts(make_config("rollout.strategy=tree"), lambda msg: None)
    try:
        replay = parts.runtime.tree.replay  # type: ignore[attr-defined]
        replay.after_search("seven\n7?", CachedSolution((1, 2), "77"), 0.0)
        state = parts.runtime.state_dict()
        replay.load_state_dict({"entries": []})
        parts.runtime.load_state_dict(state)
        assert replay.get("seven\n7?") == CachedSolution((1, 2), "77")
    finally:
        parts.close()
