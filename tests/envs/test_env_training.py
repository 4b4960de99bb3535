"""Multi-turn rollouts of a real (random tiny) policy through the training path: no gradient reaches the logits
of environment tokens in a real learner step, and TRLOO's token advantages match a hand computation."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from conftest import tiny_llama
from env_fakes import CodeSum, Player

from verity.algo.config import AlgoConfig
from verity.algo.objective import PolicyObjective, compute_advantages
from verity.data.prompts import encode_prompt
from verity.rollout.hf import HFEngine
from verity.rollout.turns import turn_tensors
from verity.rollout.workflows.episode import Budget
from verity.train.batching import collate
from verity.train.config import TrainConfig
from verity.train.learner import Learner
from verity.types import Item, SamplingParams


@pytest.fixture
def multi_turn(char_tokenizer, one_thread):
    model = tiny_llama(char_tokenizer, seed=1)
    engine = HFEngine(model, char_tokenizer, seed=0)
    encode = partial(encode_prompt, char_tokenizer, system_prompt=None)
    runner = Player(engine, char_tokenizer, encode, CodeSum, Budget(3, 40, 5))
    items = [Item(f"i{g}", "t", f"question {g}") for g in range(3)]
    rollouts = runner.run(items, SamplingParams(5, n=4))
    return model, rollouts, collate(rollouts, char_tokenizer.pad_token_id)


def test_real_rollouts_mask_exactly_the_tokens_between_model_turns(multi_turn):
    _, rollouts, _ = multi_turn
    assert max(len(r.turns) for r in rollouts) == 3
    for r in rollouts:
        in_turns = {j for t in r.turns for j in range(t.start, t.end)}
        assert [int(j in in_turns) for j in range(len(r.loss_mask))] == r.loss_mask
        assert all(lp == 0.0 for lp, m in zip(r.completion.logprobs, r.loss_mask, strict=True) if m == 0)
        assert all(lp < 0.0 for lp, m in zip(r.completion.logprobs, r.loss_mask, strict=True) if m == 1)
    assert sum(r.loss_mask.count(0) for r in rollouts) > 0


def test_no_gradient_reaches_environment_token_logits(multi_turn):
    model, _, batch = multi_turn
    # Advantages everywhere, environment tokens included: only the loss mask may keep them out of the update.
    batch.advantages = torch.randn(batch.input_ids.shape, generator=torch.Generator().manual_seed(0))
    inputs: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []

    def keep_input_ids(module, args, kwargs):
        inputs.append(kwargs["input_ids"])

    def keep_logits(module, args, output):
        output.retain_grad()
        outputs.append(output)  # (B * (T - 1), V): the head runs on every position but the last, in one chunk

    handles = [
        model.get_decoder().register_forward_pre_hook(keep_input_ids, with_kwargs=True),
        model.get_output_embeddings().register_forward_hook(keep_logits),
    ]
    train = TrainConfig(share_prompts=False, micro_batch_size=64, lr=1e-3, logit_chunk_tokens=100_000)
    Learner(model, train, PolicyObjective(AlgoConfig()), temperature=1.0, seed=0).step(batch)
    for handle in handles:
        handle.remove()
    ((input_ids,), (flat_logits,)) = inputs, outputs
    logits_grad = flat_logits.grad.view(input_ids.shape[0], input_ids.shape[1] - 1, -1)  # (B, T-1, V)
    checked_env = checked_model = 0
    for row in range(input_ids.shape[0]):
        source = next(
            i for i in range(len(batch)) if torch.equal(batch.input_ids[i, : input_ids.shape[1]], input_ids[row])
        )
        mask = batch.loss_mask[source, : input_ids.shape[1]]
        grad_norm = logits_grad[row].abs().sum(-1)  # (T-1,) logits at t predict token t + 1
        real = batch.attention_mask[source, 1 : input_ids.shape[1]].bool()
        env_positions = (mask[1:] == 0) & real
        assert torch.all(grad_norm[env_positions] == 0)
        assert torch.all(grad_norm[mask[1:] == 1] > 0)
        checked_env += int(env_positions.sum())
        checked_model += int((mask[1:] == 1).sum())
    assert checked_env > 0 and checked_model > 0


def _trloo_by_hand(rollouts, gamma):
    """Turn advantages per rollout: the discounted return of turn k minus the mean return at turn k of the
    other episodes of its group that reached turn k (0 when none did)."""
    returns = []
    for r in rollouts:
        rewards = [t.reward for t in r.turns]
        returns.append(
            [sum(gamma ** (j - k) * rewards[j] for j in range(k, len(rewards))) for k in range(len(rewards))]
        )
    out = []
    for i, r in enumerate(rollouts):
        row = []
        for k in range(len(r.turns)):
            others = [
                returns[j][k] for j, o in enumerate(rollouts) if j != i and o.group == r.group and len(o.turns) > k
            ]
            row.append(returns[i][k] - sum(others) / len(others) if others else 0.0)
        out.append(row)
    return out


def test_trloo_on_real_multi_turn_rollouts(multi_turn):
    _, rollouts, batch = multi_turn
    cfg = AlgoConfig(advantage="trloo", gamma=0.9)
    rewards = torch.tensor([r.reward for r in rollouts])
    groups = torch.tensor([r.group for r in rollouts])
    turns = turn_tensors(rollouts, batch.loss_mask.shape[1])
    adv = compute_advantages(cfg, rewards, groups, batch.loss_mask, turns=turns)
    expected = _trloo_by_hand(rollouts, 0.9)
    assert any(abs(a) > 0 for row in expected for a in row)
    for i, r in enumerate(rollouts):
        p = len(r.prompt_ids)
        want = torch.zeros(batch.loss_mask.shape[1])
        for k, t in enumerate(r.turns):
            want[p + t.start : p + t.end] = expected[i][k]
        torch.testing.assert_close(adv[i], want, rtol=1e-5, atol=1e-6)
