"""Tree search as a config choice of the one loop: config errors, a short run with its metrics, and the replay
buffer in the run's checkpoint."""

import json
from collections.abc import Callable

import pytest
import torch

from verity.config import Config
from verity.loop import train
from verity.rollout.workflows.replay import CachedSolution
from verity.schema import ConfigError
from verity.train.checkpoint import latest_checkpoint


def test_tree_is_single_turn_and_the_old_key_says_its_new_name(make_config: Callable[..., Config]) -> None:
    with pytest.raises(ConfigError, match=r"rollout\.workflow=tree is for single-turn tasks"):
        make_config("rollout.workflow=tree", "env.name=calculator")
    with pytest.raises(
        ConfigError, match=r"rollout\.strategy is now rollout\.workflow: write rollout\.workflow: tree"
    ):
        make_config("rollout.strategy=tree")


@pytest.mark.usefixtures("one_thread")
def test_a_tree_run_trains_logs_tree_metrics_and_checkpoints_its_buffer(
    make_config: Callable[..., Config],
) -> None:
    # Rewards are the share of 7s: with eval.threshold 0.25 a tiny random policy solves a few paths.
    cfg = make_config(
        "rollout.workflow=tree",
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
    entries = state["workflow"]["replay"]["entries"]
    assert len(entries) == json.loads(rows[-1])["tree/buffer_size"]
    for key, tokens, text in entries:
        assert key.startswith("seven\n") and text.count("7") / len(text) >= 0.25 and tokens


def test_the_run_carries_the_workflows_buffer_through_its_checkpoint(make_config: Callable[..., Config]) -> None:
    from verity.build import build_parts

    parts = build_parts(make_config("rollout.workflow=tree"), lambda msg: None)
    try:
        replay = parts.workflow.replay  # type: ignore[attr-defined]
        replay.after_search("seven\n7?", CachedSolution((1, 2), "77"), 0.0)
        state = parts.state_dict()
        replay.load_state_dict({"entries": []})
        parts.load_state_dict(state)
        assert replay.get("seven\n7?") == CachedSolution((1, 2), "77")
    finally:
        parts.close()
