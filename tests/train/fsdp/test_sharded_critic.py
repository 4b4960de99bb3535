"""The fsdp2 critic: two gloo ranks give the single critic's values, metrics and parameters, for both kinds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from ranks import run_ranks
from test_sharded import policy, ragged_batch

from verity.algo.config import AlgoConfig
from verity.algo.objective import PolicyObjective
from verity.train.config import TrainConfig
from verity.train.critic import CriticTrainer, build_critic
from verity.train.fsdp.sharded import ShardedLearner
from verity.train.fsdp.sharded_critic import ShardedCritic

KINDS = ["policy", "separate"]


def fit_both(kind: str, directory: str) -> dict[str, float]:
    """Two ``fit`` calls of the single critic and of this rank's share, from the same float64 models; returns the
    largest value, metric and parameter differences, and how far the fits moved the parameters. Then the share is
    saved into ``directory``, loaded into a fresh one, and a third fit of both is compared again (the optimizer's
    moments must have come back too)."""
    train = TrainConfig(lr=1e-2, micro_batch_size=2, logit_chunk_tokens=16, share_prompts=False)
    algo = AlgoConfig(advantage="gae", critic=kind, critic_lr=1e-2, value_clip=0.2, gamma=1.0, gae_lambda=0.95)
    separate = kind == "separate"
    critic = build_critic(kind, policy(), policy() if separate else None)
    critic.head.double()
    single = CriticTrainer(critic, algo.critic_lr, algo.value_clip)

    def fresh() -> ShardedCritic:
        learner = ShardedLearner(policy(), train, PolicyObjective(algo), 1.0, 3, torch.device("cpu"))
        mine = build_critic(kind, learner.model, policy() if separate else None)
        mine.head.double()
        return ShardedCritic(mine, learner, algo.critic_lr, algo.value_clip)

    sharded = fresh()
    before = {k: v.clone() for k, v in single.critic.state_dict().items()}
    value_gap = metric_gap = 0.0
    for step in range(3):
        batch = ragged_batch(step)
        rows, got = sharded.value_share(batch)
        with torch.no_grad():
            expected = single.critic.values(batch.input_ids, batch.attention_mask)[rows, : got.shape[1]]
        live = batch.attention_mask[rows, : got.shape[1]]
        value_gap = max(value_gap, ((expected - got) * live).abs().max().item())
        if step == 2:
            break
        rewards = torch.linspace(-1.0, 1.0, len(batch)).double()
        values = single.values(batch)  # the loop's GAE inputs (float32, as the group's driver hands them)
        want = single.fit(algo, batch, rewards, values, 0.0)
        have = sharded.fit(algo, batch, rewards, values, 0.0)
        assert want.keys() == have.keys()
        metric_gap = max(metric_gap, *(abs(want[k] - have[k]) for k in want))
    reference = {k: v.clone() for k, v in single.critic.state_dict().items()}
    full = {k if separate else "head." + k: v for k, v in sharded.full_state().items()}
    assert full.keys() <= reference.keys() and any(k.startswith("head.") for k in full)
    gap = max((reference[k] - v).abs().max().item() for k, v in full.items())
    head_moved = (reference["head.weight"] - before["head.weight"]).abs().max().item()
    saved = Path(directory, kind)
    sharded.save_sharded(saved)
    loaded = fresh()
    loaded.load_sharded(saved)
    batch, rewards = ragged_batch(7), torch.linspace(1.0, -1.0, 8).double()
    values = single.values(batch)
    single.fit(algo, batch, rewards, values, 0.0)
    loaded.fit(algo, batch, rewards, values, 0.0)
    resumed = {k if separate else "head." + k: v for k, v in loaded.full_state().items()}
    after = single.critic.state_dict()
    resumed_gap = max((after[k] - v).abs().max().item() for k, v in resumed.items())
    third_moved = (after["head.weight"] - reference["head.weight"]).abs().max().item()
    backbone = [k for k in full if not k.startswith("head.")]
    backbone_moved = max([(reference[k] - before[k]).abs().max().item() for k in backbone], default=0.0)
    return {
        "value_gap": value_gap,
        "metric_gap": metric_gap,
        "gap": gap,
        "head_moved": head_moved,
        "backbone_moved": backbone_moved,
        "backbone_params": len(backbone),
        "loss": want["critic/loss"],
        "resumed_gap": resumed_gap,
        "third_moved": third_moved,
    }


def fit_every_kind(directory: str) -> dict[str, Any]:
    return {kind: fit_both(kind, directory) for kind in KINDS}


def test_two_fsdp2_ranks_fit_the_critic_as_the_single_critic_does(tmp_path: Path) -> None:
    """float64 throughout: a per-rank loss normalizer (off by about 2x), a lost row or a critic that leaves its
    backbone untrained would be far outside 1e-10. The values are compared before and after each fit."""
    results = run_ranks(fit_every_kind, 2, tmp_path, str(tmp_path / "checkpoints"))
    for rank in results:
        for kind in KINDS:
            r = rank[kind]
            assert r["value_gap"] < 1e-10, (kind, r)
            assert r["metric_gap"] < 1e-10, (kind, r)
            assert r["gap"] < 1e-10, (kind, r)
            assert r["head_moved"] > 1e-3, (kind, r)  # the fits did change the critic
            assert r["loss"] > 1e-3, (kind, r)
            assert r["resumed_gap"] < 1e-10, (kind, r["resumed_gap"], r["third_moved"])  # saved, loaded, fit on
            assert r["third_moved"] > 1e-4, (kind, r["third_moved"])
        assert rank["policy"]["backbone_params"] == 0  # only the head trains on the policy's backbone
        assert rank["separate"]["backbone_params"] > 0 and rank["separate"]["backbone_moved"] > 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")
