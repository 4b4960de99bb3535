from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from verity.algo.advantages import (
    broadcast_to_tokens,
    discounted_returns,
    filter_outliers,
    gae_advantages,
    group_relative_advantages,
    positive_scaled,
    rareness_weights,
    reinforce_pp_advantages,
    rloo_advantages,
    task_normalized_advantages,
    token_level_rewards,
    trloo_advantages,
    turn_level_rewards,
    turns_to_tokens,
)

REWARDS = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 4.0])
GROUPS = torch.tensor([7, 7, 7, 7, 3, 3])


def test_grpo_hand_computed_and_zero_mean_per_group() -> None:
    adv = group_relative_advantages(REWARDS, GROUPS, eps=0.0)
    std_a = torch.tensor([1.0, 0.0, 0.0, 0.0]).std().item()  # unbiased: 0.5
    assert adv[0].item() == pytest.approx(0.75 / std_a)
    assert adv[1].item() == pytest.approx(-0.25 / std_a)
    assert adv[4].item() == pytest.approx(-1 / 2**0.5)
    for g in (7, 3):
        assert adv[torch.eq(GROUPS, g)].sum().item() == pytest.approx(0.0, abs=1e-6)


def test_dr_grpo_has_no_std_and_singletons_get_zero() -> None:
    adv = group_relative_advantages(REWARDS, GROUPS, scale_by_std=False)
    assert adv.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25, -1.0, 1.0])
    assert group_relative_advantages(torch.tensor([5.0]), torch.tensor([0])).item() == 0.0


def test_rloo_loop_equals_vectorized() -> None:
    torch.manual_seed(0)
    rewards = torch.rand(12)
    groups = torch.tensor([0] * 5 + [1] * 4 + [2] * 3)
    loop = []
    for i in range(12):
        others = [rewards[j].item() for j in range(12) if j != i and groups[j] == groups[i]]
        loop.append(rewards[i].item() - sum(others) / len(others))
    assert rloo_advantages(rewards, groups).tolist() == pytest.approx(loop, abs=1e-6)


def test_task_normalization_uses_task_std() -> None:
    rewards = torch.tensor([1.0, 0.0, 10.0, 0.0])
    adv = task_normalized_advantages(rewards, torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 1]), eps=0.0)
    # task 0: centred +-0.5, std of [1, 0] = 0.7071; task 1: centred +-5, std of [10, 0] = 7.071
    assert adv.tolist() == pytest.approx([0.7071068, -0.7071068, 0.7071068, -0.7071068], abs=1e-5)


def test_token_rewards_and_discounted_returns_skip_masked_tokens() -> None:
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    tok = token_level_rewards(torch.tensor([2.0]), mask)
    assert tok.tolist() == [[0.0, 0.0, 2.0, 0.0]]
    returns = discounted_returns(tok, mask, gamma=0.5)
    assert returns.tolist() == [[1.0, 0.0, 2.0, 0.0]]


def test_reinforce_pp_whitens_over_batch_tokens() -> None:
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    tok = token_level_rewards(torch.tensor([1.0, 0.0]), mask)
    adv = reinforce_pp_advantages(tok, mask, eps=0.0)
    # returns 1, 1, 0 over live tokens: mean 2/3, unbiased std 0.57735
    assert_close(adv, torch.tensor([[0.57735, 0.57735], [-1.1547, 0.0]]), atol=1e-4, rtol=0)
    with_base = reinforce_pp_advantages(tok, mask, eps=0.0, baseline=torch.tensor([0.5, 0.5]))
    assert_close(with_base, adv, atol=1e-5, rtol=0)  # a constant shift whitens away


def test_gae_hand_computed() -> None:
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    rewards = torch.tensor([[0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.25, 9.0]])
    adv, returns = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.8)
    d1 = 1.0 - 0.25
    d0 = 0.0 + 0.9 * 0.25 - 0.5
    assert_close(adv, torch.tensor([[d0 + 0.72 * d1, d1, 0.0]]))
    assert_close(returns, torch.tensor([[d0 + 0.72 * d1 + 0.5, d1 + 0.25, 0.0]]))


def test_trloo_hand_made_multi_turn() -> None:
    # group of three episodes; episode 2 stops after one turn
    turn_rewards = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.0]])
    turn_mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    adv = trloo_advantages(turn_rewards, turn_mask, torch.tensor([0, 0, 0]))
    # returns: ep0 [1, 1], ep1 [1, 0], ep2 [0.5, -]
    assert_close(adv, torch.tensor([[1 - 0.75, 1 - 0], [1 - 0.75, 0 - 1], [0.5 - 1.0, 0.0]]))
    token_turns = torch.tensor([[-1, 0, 0, -1, 1], [0, -1, 1, 1, -1], [0, 0, -1, -1, -1]])
    tokens = turns_to_tokens(adv, token_turns)
    assert tokens[0].tolist() == pytest.approx([0.0, 0.25, 0.25, 0.0, 1.0])
    assert tokens[1].tolist() == pytest.approx([0.25, 0.0, -1.0, -1.0, 0.0])


def test_turn_level_rewards_put_the_rest_of_the_episode_reward_on_its_last_turn() -> None:
    # episode 1 stopped after its first turn; both episodes were shaped up by 0.3, row 2 played no turn
    turn_rewards = torch.tensor([[0.0, 1.0], [0.5, 0.0], [0.0, 0.0]])
    turn_mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    token_turns = torch.tensor([[0, 1], [0, -1], [-1, -1]])
    penalty = torch.tensor([[0.25, 0.5], [0.125, 9.0], [9.0, 9.0]])
    out = turn_level_rewards(turn_rewards, turn_mask, torch.tensor([1.3, 0.8, 0.3]), token_turns)
    assert_close(out, torch.tensor([[0.0, 1.3], [0.8, 0.0], [0.0, 0.0]]))
    out = turn_level_rewards(turn_rewards, turn_mask, torch.tensor([1.3, 0.8, 0.3]), token_turns, penalty)
    assert_close(out, torch.tensor([[-0.25, 0.8], [0.675, 0.0], [0.0, 0.0]]))


def test_filter_outliers_zeroes_only_extremes() -> None:
    adv = torch.tensor([0.0] * 19 + [100.0])
    assert filter_outliers(adv, 3.0)[-1].item() == 0.0
    small = torch.tensor([1.0, -1.0, 0.5])
    assert torch.equal(filter_outliers(small, 3.0), small)


def test_rareness_weights_favor_the_rare_outcome() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    weights = rareness_weights(rewards, torch.tensor([0, 0, 0, 0, 1, 1]), alpha=1.0)
    # group 0: p = 1/4 and 3/4 -> raw 4, 4/3 (x3) -> mean 2 -> 2, 2/3; group 1 all agree -> 1
    assert weights.tolist() == pytest.approx([2.0, 2 / 3, 2 / 3, 2 / 3, 1.0, 1.0])
    assert rareness_weights(rewards, torch.zeros(6), alpha=0.0).tolist() == [1.0] * 6


SIX_GROUPS = torch.tensor([0, 0, 0, 0, 1, 1])
THREE_EPISODES = torch.tensor([0, 0, 0])
ON = torch.ones(3, 2)
REWARD_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "grpo": lambda r: group_relative_advantages(r, SIX_GROUPS),
    "dr_grpo": lambda r: group_relative_advantages(r, SIX_GROUPS, scale_by_std=False),
    "rloo": lambda r: rloo_advantages(r, SIX_GROUPS),
    "task_norm": lambda r: task_normalized_advantages(r, SIX_GROUPS, torch.tensor([0, 0, 0, 1, 1, 1])),
    "rareness": lambda r: rareness_weights(r, SIX_GROUPS, alpha=1.0),
    "broadcast": lambda r: broadcast_to_tokens(r, torch.ones(6, 2, dtype=torch.bool)),
    "token_level_rewards": lambda r: token_level_rewards(r, torch.ones(6, 2)),
    "discounted_returns": lambda r: discounted_returns(r.view(3, 2), ON, gamma=0.5),
    "reinforce_pp": lambda r: reinforce_pp_advantages(r.view(3, 2), ON, baseline=torch.tensor([1, 0, 0])),
    "gae": lambda r: gae_advantages(r.view(3, 2), torch.full((3, 2), 0.25), ON, gamma=0.9, lam=0.8)[0],
    "trloo": lambda r: trloo_advantages(r.view(3, 2), ON, THREE_EPISODES, gamma=0.5),
}


@pytest.mark.parametrize("name", sorted(REWARD_FUNCTIONS))
@pytest.mark.parametrize("kind", [torch.int64, torch.int32, torch.bool])
def test_integer_and_bool_rewards_are_not_truncated(name: str, kind: torch.dtype) -> None:
    """Rewards may arrive as ints or bools; the result must be the float computation's (GRPO on [1, 0, 0, 0] gives
    1.5 and -0.5, which a cast back to int64 turns into 1 and 0)."""
    values = [1, 0, 0, 0, 1, 0]
    fn = REWARD_FUNCTIONS[name]
    got = fn(torch.tensor(values, dtype=kind))
    assert got.dtype == torch.float32
    assert_close(got, fn(torch.tensor(values, dtype=torch.float32)), atol=1e-6, rtol=0)


def test_broadcast_keeps_the_advantages_precision() -> None:
    adv = torch.tensor([0.1234567, -1.0])
    out = broadcast_to_tokens(adv, torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.bfloat16))
    assert out.dtype == torch.float32
    assert out.tolist() == [[adv[0].item(), 0.0], [-1.0, -1.0]]


def test_positive_scaled_scales_only_positive_advantages() -> None:
    adv = torch.tensor([[1.5, -0.5], [0.0, -2.0]])
    assert_close(positive_scaled(adv, 0.1), torch.tensor([[0.15, -0.5], [0.0, -2.0]]))
