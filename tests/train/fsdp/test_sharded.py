"""The fsdp2 learner rank: two gloo ranks end where the single learner ends, for every aggregation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import small_llama
from ranks import run_ranks

from verity.algo.config import AlgoConfig
from verity.algo.objective import PolicyObjective
from verity.train.batching import Batch, balanced_partition
from verity.train.config import TrainConfig
from verity.train.fsdp.sharded import ShardedLearner
from verity.train.learner import Learner

AGGREGATIONS = ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant"]
LENGTHS = [5, 19, 7, 30, 11, 6, 24, 9]  # rows of very different lengths: the ranks' shares differ
PROMPT = 3


def ragged_batch(seed: int, kl: bool = False) -> Batch:
    """Rows of ``LENGTHS`` tokens (prompt 3, the rest trained), advantages of both signs, two rows all zero;
    with ``kl``, reference log-probs too."""
    generator = torch.Generator().manual_seed(seed)
    width = max(LENGTHS)
    ids = torch.randint(2, 61, (len(LENGTHS), width), generator=generator)
    attention = (torch.arange(width)[None] < torch.tensor(LENGTHS)[:, None]).long()
    loss_mask = attention.float()
    loss_mask[:, :PROMPT] = 0
    advantages = torch.randn(len(LENGTHS), 1, generator=generator).double() * loss_mask
    advantages[[2, 5]] = 0
    old = -3 - torch.rand(ids.shape, generator=generator).double()
    ref = (old + 0.3 * torch.rand(ids.shape, generator=generator).double()) * loss_mask if kl else None
    return Batch(ids * attention, attention, loss_mask.double(), old * loss_mask, advantages, ref)


def policy() -> torch.nn.Module:
    return small_llama(61, eos=1, pad=0, tie_word_embeddings=True).double().train()


def train_both(aggregation: str, kl: bool = False, recompute: bool = False) -> dict[str, Any]:
    """Two steps (two mini-batches each) and one SFT step of the single learner and of this rank of the sharded
    one, from the same float64 policy; returns the largest parameter, metric, SFT-loss and log-prob differences."""
    train = TrainConfig(
        lr=1e-2,
        mini_batches=2,
        micro_batch_size=2,
        logit_chunk_tokens=16,
        share_prompts=False,
        gradient_checkpointing=recompute,
    )
    algo = AlgoConfig(aggregation=aggregation, constant_normalizer=40.0, entropy_coef=0.01, kl_coef=0.1 * kl)
    objective = PolicyObjective(algo)
    single = Learner(policy(), train, objective, 0.9, seed=3)
    sharded = ShardedLearner(policy(), train, objective, 0.9, 3, torch.device("cpu"), policy() if kl else None)
    metric_gap = 0.0
    for step in range(2):
        batch = ragged_batch(step, kl)
        expected, got = single.step(batch), sharded.step(batch)
        assert expected.keys() == got.keys()
        metric_gap = max(metric_gap, *(abs(expected[k] - got[k]) for k in expected))
    sft_batch = ragged_batch(4)
    sft_gap = abs(single.sft_step(sft_batch, 0.5) - sharded.sft_step(sft_batch, 0.5))
    reference = single.model.state_dict()
    moved = max((reference[k] - policy().state_dict()[k]).abs().max().item() for k in reference)
    gap = max((reference[name] - full).abs().max().item() for name, full in sharded.full_weights())
    rows, values = sharded.logprob_share(ragged_batch(5))
    expected_lp = single.logprobs(ragged_batch(5))[rows, : values.shape[1]]
    logprobs_gap = (expected_lp - values.to(expected_lp.dtype)).abs().max().item()
    result = {
        "gap": gap,
        "moved": moved,
        "metric_gap": metric_gap,
        "logprobs_gap": logprobs_gap,
        "sft_gap": sft_gap,
    }
    if kl:  # the sharded reference still gives the initial policy's log-probs
        rows, values = sharded.logprob_share(ragged_batch(5), reference=True)
        expected_ref = single.logprobs(ragged_batch(5), policy())[rows, : values.shape[1]]
        result["reference_gap"] = (expected_ref - values.to(expected_ref.dtype)).abs().max().item()
        result["kl_reported"] = expected["kl"]
    return result


def train_every_aggregation() -> dict[str, Any]:
    results = {aggregation: train_both(aggregation) for aggregation in AGGREGATIONS}
    extra = {
        "token_mean+kl": train_both("token_mean", kl=True),
        "recompute": train_both("token_mean", recompute=True),
    }
    return results | extra


def test_token_balanced_partition() -> None:
    shares = balanced_partition(torch.tensor(LENGTHS), 2)
    tokens = [sum(LENGTHS[i] for i in share) for share in shares]
    assert sorted(torch.cat(shares).tolist()) == list(range(len(LENGTHS)))
    assert tokens == [56, 55]  # 30+11+9+6 against 24+19+7+5: one token apart, 4 rows each
    assert abs(tokens[0] - tokens[1]) <= max(LENGTHS)


def test_two_fsdp2_ranks_end_where_the_single_learner_ends(tmp_path: Path) -> None:
    """float64 throughout, so the two summation orders agree to ~1e-15; 1e-10 leaves room and still catches a
    per-rank normalizer (off by about 2x) or a lost micro-batch (off by a whole update of lr 1e-2). One more run
    adds a KL term (which trains every row) and checks the sharded reference's log-probs; another recomputes each
    layer's activations in the backward pass (train.gradient_checkpointing) on both sides."""
    results = run_ranks(train_every_aggregation, 2, tmp_path)
    for rank in results:
        assert rank["token_mean+kl"]["reference_gap"] < 1e-10
        assert rank["token_mean+kl"]["kl_reported"] > 1e-3  # the KL term was in play
        for aggregation in [*AGGREGATIONS, "token_mean+kl", "recompute"]:
            r = rank[aggregation]
            assert r["moved"] > 1e-3, aggregation  # the steps did change the policy
            assert r["gap"] < 1e-10, (aggregation, r)
            assert r["metric_gap"] < 1e-10, (aggregation, r)
            assert r["logprobs_gap"] < 1e-10, (aggregation, r)
            assert r["sft_gap"] < 1e-10, (aggregation, r)


pytestmark = pytest.mark.usefixtures("one_thread")
