import math

import pytest
import torch
from pydantic import ValidationError

from verity.algo.config import AlgoConfig
from verity.algo.losses import (
    clipped_surrogate,
    clipped_value_loss,
    entropy_from_logits,
    entropy_shaped_advantages,
    safe_log_ratio,
)
from verity.algo.objective import policy_loss, shape_rewards
from verity.algo.shaping import long2short_reward, repetition_fraction, soft_overlong_penalty


def test_soft_overlong_penalty_hand_computed() -> None:
    lengths = torch.tensor([10, 12, 14, 16, 30])
    assert soft_overlong_penalty(lengths, max_len=16, buffer=4).tolist() == [0.0, 0.0, -0.5, -1.0, -1.0]


def test_long2short_relative_to_group() -> None:
    lengths = torch.tensor([10, 20, 30, 5, 5])
    correct = torch.tensor([True, True, False, True, False])
    reward = long2short_reward(lengths, correct, torch.tensor([0, 0, 0, 1, 1]))
    assert reward.tolist() == pytest.approx([0.5, 0.0, -0.5, 0.0, 0.0])
    wrong_short = long2short_reward(torch.tensor([10, 30]), torch.tensor([False, False]), torch.tensor([0, 0]))
    assert wrong_short.tolist() == pytest.approx([0.0, -0.5])  # a wrong answer never gains


def test_repetition_fraction_hand_computed() -> None:
    assert repetition_fraction([1, 2, 3, 4], 2) == 0.0
    assert repetition_fraction([1, 2, 1, 2, 1, 2], 2) == pytest.approx(3 / 5)  # 12 21 [12] [21] [12]
    assert repetition_fraction([1], 4) == 0.0


def test_shape_rewards_composes_terms() -> None:
    cfg = AlgoConfig(overlong_max_len=16, overlong_buffer=4, repetition_coef=0.5, repetition_ngram=2)
    rewards, metrics = shape_rewards(
        cfg, torch.tensor([1.0, 1.0]), torch.tensor([14, 6]), torch.tensor([0, 0]), [[1, 2, 3], [1, 2, 1, 2, 1, 2]]
    )
    assert rewards.tolist() == pytest.approx([0.5, 1.0 - 0.3])
    assert metrics["shaping/overlong"] == pytest.approx(-0.25)
    with pytest.raises(ValueError, match="needs completion_ids"):
        shape_rewards(cfg, torch.ones(2), torch.ones(2), torch.zeros(2))


@pytest.mark.parametrize("kind", [torch.int64, torch.bool])
def test_shape_rewards_keeps_fractions_of_integer_rewards(kind: torch.dtype) -> None:
    cfg = AlgoConfig(overlong_max_len=16, overlong_buffer=4)
    rewards = torch.tensor([1, 1, 0], dtype=kind)
    shaped, _ = shape_rewards(cfg, rewards, torch.tensor([14, 6, 15]), torch.tensor([0, 0, 1]))
    assert shaped.tolist() == pytest.approx([0.5, 1.0, -0.75])  # a cast back to int64 gave [0, 1, 0]


def test_losses_treat_integer_advantages_like_floats() -> None:
    adv = torch.tensor([[2, -1, 0]])
    log_ratio = torch.tensor([[0.5, 0.5, 0.1]])
    for fn in (
        lambda a: clipped_surrogate(log_ratio, a, 0.2, 0.2, dual_clip=1.5)[0],
        lambda a: entropy_shaped_advantages(a, torch.full((1, 3), 0.3), alpha=1.0, kappa=3.0),
        lambda a: clipped_value_loss(torch.zeros(1, 3), torch.full((1, 3), 0.5), a, clip=0.2),
    ):
        assert fn(adv)[0].tolist() == pytest.approx(fn(adv.float())[0].tolist())


def test_safe_ratio_clamps_in_log_space() -> None:
    log_ratio = safe_log_ratio(torch.tensor([100.0, -0.5]), torch.zeros(2), clamp=2.0)
    assert log_ratio.tolist() == pytest.approx([2.0, -0.5])
    cfg = AlgoConfig(log_ratio_clamp=2.0, clip_low=10.0, clip_high=10.0)
    loss, metrics = policy_loss(
        cfg,
        torch.tensor([[500.0]]),
        torch.zeros(1, 1),
        -torch.ones(1, 1),
        torch.ones(1, 1),
        token_normalizer=1,
        seq_normalizer=1,
    )
    assert math.isfinite(loss.item())
    assert metrics["ratio/max"] == pytest.approx(math.exp(2.0))


def test_entropy_helpers() -> None:
    logits = torch.zeros(1, 1, 4)
    assert entropy_from_logits(logits).item() == pytest.approx(math.log(4))
    adv = torch.tensor([1.0, -1.0, 1.0])
    shaped = entropy_shaped_advantages(adv, torch.tensor([0.1, 5.0, 5.0]), alpha=1.0, kappa=2.0)
    assert shaped.tolist() == pytest.approx([1.1, -0.5, 1.5])  # the bonus is capped at |A| / kappa


def test_entropy_shaping_never_flips_a_sign() -> None:
    adv = torch.tensor([-5.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 5.0])[:, None].expand(7, 5)  # (7, 5)
    entropy = torch.tensor([0.0, 0.1, 1.0, 10.0, 1e4]).expand(7, 5)
    for alpha in (0.0, 0.5, 1.0, 100.0):
        for kappa in (1.001, 1.5, 2.0, 10.0):
            shaped = entropy_shaped_advantages(adv, entropy, alpha=alpha, kappa=kappa)
            assert torch.equal(torch.sign(shaped), torch.sign(adv)), (alpha, kappa)
            assert (shaped >= adv).all() and (shaped - adv <= adv.abs() / kappa + 1e-7).all()
            assert (shaped[adv < 0] <= adv[adv < 0] * (1 - 1 / kappa) + 1e-7).all()


@pytest.mark.parametrize("kappa", [0.5, 1.0])
def test_entropy_shaping_rejects_a_kappa_that_could_flip_signs(kappa: float) -> None:
    # kappa = 0.5: A = -1, H = 10, alpha = 1 would give -1 + min(10, 2) = +1
    with pytest.raises(ValueError, match=r"kappa > 1 \(algo.entropy_adv_kappa\)"):
        entropy_shaped_advantages(torch.tensor([-1.0]), torch.tensor([10.0]), alpha=1.0, kappa=kappa)
    with pytest.raises(ValidationError, match="entropy_adv_kappa"):
        AlgoConfig(entropy_adv_alpha=1.0, entropy_adv_kappa=kappa)
    with pytest.raises(ValueError, match="alpha >= 0"):
        entropy_shaped_advantages(torch.tensor([1.0]), torch.tensor([10.0]), alpha=-1.0, kappa=2.0)


def test_negative_adv_weight_drops_negative_tokens() -> None:
    adv = torch.tensor([[1.0, -1.0]])
    loss, _ = policy_loss(
        AlgoConfig(),
        torch.zeros(1, 2),
        torch.zeros(1, 2),
        adv,
        torch.ones(1, 2),
        token_normalizer=2,
        seq_normalizer=1,
        negative_adv_weight=0.0,
    )
    assert loss.item() == pytest.approx(-0.5)
