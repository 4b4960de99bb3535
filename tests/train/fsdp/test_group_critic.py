"""A GAE run with two fsdp2 learner ranks: the critic the ranks hold sharded, through the real loop."""

from __future__ import annotations

import math

import pytest

from verity.loop import train
from verity.run.runs import read_jsonl
from verity.train.checkpoint import ShardedPart, latest_checkpoint, load_checkpoint
from verity.train.fsdp.group import group_spec

RUN = ("train.strategy=fsdp2", "train.learners=2", "algo.advantage=gae", "algo.critic_lr=1e-2")


def test_a_critic_is_part_of_the_group_spec(make_config) -> None:
    cfg = make_config(*RUN)
    assert group_spec(cfg, cfg.model.name, "cpu", 1).critic
    assert not group_spec(make_config(*RUN[:2]), cfg.model.name, "cpu", 1).critic


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["policy", "separate"])
def test_a_gae_run_with_two_ranks_trains_checkpoints_and_resumes_its_critic(make_config, kind: str) -> None:
    """Two steps through the loop (values before the update, a fit after it), the critic's shards in the step's
    checkpoint, then a resumed third step that loads them."""
    cfg = make_config(*RUN, f"algo.critic={kind}", "train.steps=2", "train.checkpoint_every=1")
    summary = train(cfg, quiet=True)
    assert summary["status"] == "finished" and summary["steps"] == 2
    rows = [row for row in read_jsonl(cfg.run_dir / "metrics.jsonl") if "critic/loss" in row]
    assert len(rows) == 2
    assert all(math.isfinite(row["critic/loss"]) for row in rows)
    assert (
        max(row["critic/abs_error"] for row in rows) > 0
    )  # a step with a reward gave the critic something to fit
    state = load_checkpoint(latest_checkpoint(cfg.run_dir / "checkpoints"))
    assert isinstance(state["critic"], ShardedPart)
    assert (state["critic"].directory / ".metadata").is_file()
    resumed = train(make_config(*RUN, f"algo.critic={kind}", "train.steps=3"), resume=True, quiet=True)
    assert resumed["status"] == "finished" and resumed["steps"] == 3
    rows = [row for row in read_jsonl(cfg.run_dir / "metrics.jsonl") if "critic/loss" in row]
    assert len(rows) == 3 and math.isfinite(rows[-1]["critic/loss"])
