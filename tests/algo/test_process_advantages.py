"""Process-supervised GRPO on hand-computed step rewards, and step scores reaching tokens through the turns."""

import math

import pytest
import torch

from verity.algo.advantages import process_group_advantages
from verity.algo.config import AlgoConfig
from verity.algo.objective import compute_advantages
from verity.rollout.turns import step_turns, turn_tensors
from verity.types import Completion, Item, Rollout, Score, Turn

S = math.sqrt(1 / 3)  # unbiased std of {1, 0, 1}


def test_group_normalised_returns_to_go() -> None:
    # group 0: sample 0 has steps [1, 0], sample 1 has [1]; group 1 (sample 2) has one step: no baseline.
    rewards = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    adv = process_group_advantages(rewards, mask, torch.tensor([0, 0, 1]), eps=0.0)
    hi, lo = (1 - 2 / 3) / S, (0 - 2 / 3) / S  # 0.577..., -1.154...
    expected = torch.tensor([[hi + lo, lo], [hi, 0.0], [0.0, 0.0]])
    assert torch.allclose(adv, expected, atol=1e-5)


def test_equal_steps_give_zero() -> None:
    adv = process_group_advantages(torch.ones(2, 3), torch.ones(2, 3), torch.tensor([0, 0]))
    assert torch.equal(adv, torch.zeros(2, 3))


def _decode(ids: list[int]) -> str:
    return "".join(chr(97 + i) for i in ids)  # one character per token


def test_step_turns_split_tokens_at_step_ends() -> None:
    ids = [0, 1, 2, 3, 4, 5]  # "abcdef"
    turns = step_turns(ids, [(2, 1.0), (5, 0.0), (6, 1.0)], _decode)
    assert turns == [Turn(0, 2, 1.0), Turn(2, 5, 0.0), Turn(5, 6, 1.0)]
    # text after the last step end belongs to the last step; an empty step is dropped
    assert step_turns(ids, [(0, 0.5), (3, 1.0), (4, 0.0)], _decode) == [Turn(0, 3, 1.0), Turn(3, 6, 0.0)]


def _rollout(group: int, ids: list[int], score: Score) -> Rollout:
    return Rollout(Item("i", "t", "p"), group, [9], Completion(ids, [0.0] * len(ids), _decode(ids), "stop"), score)


def test_step_scores_become_token_advantages() -> None:
    rollouts = [
        _rollout(0, [0, 1, 2, 3], Score(0.0, steps=((2, 1.0), (4, 0.0)))),
        _rollout(0, [0, 1], Score(1.0, steps=((2, 1.0),))),
    ]
    width = 5  # one prompt token + four completion tokens
    turns = turn_tensors(rollouts, width, _decode)
    assert turns[2].tolist() == [[-1, 0, 0, 1, 1], [-1, 0, 0, -1, -1]]
    mask = torch.tensor([[0, 1, 1, 1, 1], [0, 1, 1, 0, 0]], dtype=torch.float32)
    cfg = AlgoConfig(advantage="grpo_process", adv_eps=1e-12)
    adv = compute_advantages(cfg, torch.tensor([0.0, 1.0]), torch.tensor([0, 0]), mask, turns=turns)
    hi, lo = (1 - 2 / 3) / S, (0 - 2 / 3) / S
    expected = torch.tensor([[0.0, hi + lo, hi + lo, lo, lo], [0.0, hi, hi, 0.0, 0.0]])
    assert torch.allclose(adv, expected, atol=1e-5)


def test_without_decode_a_rollout_is_one_turn() -> None:
    rollouts = [_rollout(0, [0, 1, 2], Score(0.25, steps=((1, 1.0), (3, 0.0))))]
    rewards, _, token_turns = turn_tensors(rollouts, 4)
    assert rewards.tolist() == [[0.25]] and token_turns.tolist() == [[-1, 0, 0, 0]]


def test_kl_in_reward_is_refused() -> None:
    cfg = AlgoConfig(advantage="grpo_process", kl_in="reward", kl_coef=0.1)
    turns = (torch.ones(1, 1), torch.ones(1, 1), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="kl_in=loss"):
        compute_advantages(
            cfg,
            torch.ones(1),
            torch.zeros(1),
            torch.ones(1, 2),
            turns=turns,
            old_logprobs=torch.zeros(1, 2),
            ref_logprobs=torch.ones(1, 2),
        )
