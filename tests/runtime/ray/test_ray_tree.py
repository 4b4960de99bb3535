"""Tree search on the Ray runtime: the tree workflow runs in the rollout actors as it runs locally. Sync mode gives
the local runtime's rollouts (tokens, log-probs, step values) and parameters for two steps, with the one replay
buffer in the driver; async mode trains, checkpoints and resumes."""

from __future__ import annotations

import json

import pytest

ray = pytest.importorskip("ray")

from ray_cluster import ASYNC, RAY, cluster, ray_parts  # noqa: E402, F401
from test_ray_runtime import assert_same_parameters  # noqa: E402

from verity.build import build_parts  # noqa: E402
from verity.loop import rl_step, train  # noqa: E402
from verity.train.checkpoint import latest_checkpoint, load_checkpoint  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("one_thread", "cluster")]

# Rewards are the share of distinct characters: at eval.threshold 0.9 the tiny policy solves some paths of a tree
# and not all, so the replay buffer caches a solution within two steps.
TREE = (
    "rollout.workflow=tree",
    "rollout.tree.width=2",
    "rollout.tree.step_tokens=1",
    "rollout.tree.replay.threshold=1.0",
    "algo.advantage=tree_grpo",
    "eval.threshold=0.9",
    "reward.verifiers=[helpers.loop_tasks:distinct_characters]",
)


def test_sync_tree_search_on_ray_gives_the_local_runtimes_rollouts(make_config) -> None:
    local = build_parts(make_config(*TREE), lambda message: None)
    parts, runtime = ray_parts(make_config(*TREE, *RAY))
    try:
        for _ in range(2):
            want_metrics, want = rl_step(local)
            got_metrics, got = rl_step(parts)
            assert [r.completion.token_ids for r in got] == [r.completion.token_ids for r in want]
            assert [r.completion.logprobs for r in got] == [r.completion.logprobs for r in want]
            assert [(r.item.id, r.group, r.reward, r.turns) for r in got] == [
                (r.item.id, r.group, r.reward, r.turns) for r in want
            ]
            tree = [k for k in want_metrics if k.startswith("tree/")]
            assert tree and {k: got_metrics[k] for k in tree} == {k: want_metrics[k] for k in tree}
        assert_same_parameters(local.learner.model, parts.learner.model)
        assert parts.workflow.state_dict() == local.workflow.state_dict()  # one buffer, in the driver
        assert want_metrics["tree/buffer_size"] > 0
    finally:
        runtime.close()
        local.runtime.close()


def test_async_tree_search_on_ray_trains_checkpoints_and_resumes(make_config) -> None:
    settings = (*TREE, *ASYNC, "train.checkpoint_every=1")
    first = train(make_config(*settings, "train.steps=2"), quiet=True)
    assert first["status"] == "finished" and first["steps"] == 2
    cfg = make_config(*settings, "train.steps=3")
    resumed = train(cfg, resume=True, quiet=True)
    assert resumed["status"] == "finished" and resumed["steps"] == 3
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "tree/nodes" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(r["async/staleness_max"] <= 1 for r in steps)
    state = load_checkpoint(latest_checkpoint(cfg.run_dir / "checkpoints"))
    assert state["step"] == 3 and "replay" in state["workflow"]
    assert state["workflow"]["replay"]["entries"] or steps[-1]["tree/buffer_size"] == 0
