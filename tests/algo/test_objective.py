import math

import pytest
import torch
from torch.testing import assert_close

from verity.algo.config import AlgoConfig
from verity.algo.losses import behaviour_weight
from verity.algo.objective import compute_advantages, needs_proximal, policy_loss
from verity.algo.state import AlgoState

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant")


def _batch(seed: int = 0, b: int = 4, t: int = 5) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    mask = (torch.rand(b, t, generator=gen) > 0.3).float()
    mask[:, 0] = 1.0
    return {
        "logprobs": -torch.rand(b, t, generator=gen),
        "old_logprobs": -torch.rand(b, t, generator=gen),
        "advantages": torch.randn(b, t, generator=gen) * mask,
        "mask": mask,
    }


def _loss(cfg: AlgoConfig, batch: dict[str, torch.Tensor], **kw) -> tuple[torch.Tensor, dict[str, float]]:
    kw.setdefault("token_normalizer", batch["mask"].sum().item())
    kw.setdefault("seq_normalizer", batch["mask"].shape[0])
    return policy_loss(cfg, batch["logprobs"], batch["old_logprobs"], batch["advantages"], batch["mask"], **kw)


def _grad(cfg: AlgoConfig, batch: dict[str, torch.Tensor], **kw) -> torch.Tensor:
    logprobs = batch["logprobs"].clone().requires_grad_(True)
    _loss(cfg, {**batch, "logprobs": logprobs}, **kw)[0].backward()
    return logprobs.grad


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_micro_batch_losses_sum_to_mini_batch_loss(aggregation: str) -> None:
    cfg = AlgoConfig(aggregation=aggregation, constant_normalizer=7.0, kl_coef=0.1, entropy_coef=0.01)
    batch = _batch(b=6)
    batch["ref_logprobs"] = -torch.rand(6, 5)
    batch["entropy"] = torch.rand(6, 5)
    norms = {"token_normalizer": batch["mask"].sum().item(), "seq_normalizer": 6.0}
    extra = ("ref_logprobs", "entropy")
    whole, _ = _loss(cfg, batch, **norms, **{k: batch[k] for k in extra})
    parts = sum(
        _loss(
            cfg, {k: v[i : i + 2] for k, v in batch.items()}, **norms, **{k: batch[k][i : i + 2] for k in extra}
        )[0]
        for i in range(0, 6, 2)
    )
    assert_close(parts, whole)


def test_ppo_gradient_equals_policy_gradient_at_ratio_one() -> None:
    batch = _batch()
    batch["old_logprobs"] = batch["logprobs"].clone()
    ppo = _grad(AlgoConfig(), batch)
    # REINFORCE: loss = -sum(A * logp * mask) / n_tokens
    logprobs = batch["logprobs"].clone().requires_grad_(True)
    (-(batch["advantages"] * logprobs * batch["mask"]).sum() / batch["mask"].sum()).backward()
    assert_close(ppo, logprobs.grad)


def test_clip_hand_computed_with_clip_higher() -> None:
    cfg = AlgoConfig(clip_low=0.2, clip_high=0.28)
    logprobs = torch.log(torch.tensor([[1.5, 1.5, 0.5]]))
    adv = torch.tensor([[1.0, -1.0, -1.0]])
    loss, metrics = policy_loss(
        cfg, logprobs, torch.zeros(1, 3), adv, torch.ones(1, 3), token_normalizer=3, seq_normalizer=1
    )
    # token 0: min(1.5, 1.28) = 1.28 -> -1.28; token 1: max(1.5, 1.28) -> 1.5; token 2: -min(-0.5, -0.8) = 0.8
    assert loss.item() == pytest.approx((-1.28 + 1.5 + 0.8) / 3)
    assert metrics["clip_frac"] == pytest.approx(2 / 3)
    assert metrics["ratio/max"] == pytest.approx(1.5)


def test_dual_clip_bounds_loss_for_negative_advantages() -> None:
    cfg = AlgoConfig(dual_clip=3.0)
    ratios = torch.tensor([[1.0, 2.0, 10.0, 1e4]])
    adv = torch.full((1, 4), -2.0)
    loss, _ = policy_loss(
        cfg, ratios.log(), torch.zeros(1, 4), adv, torch.ones(1, 4), token_normalizer=1, seq_normalizer=1
    )
    assert loss.item() == pytest.approx(2.0 + 4.0 + 6.0 + 6.0)  # every token at most c * |A| = 6
    pos, _ = policy_loss(
        cfg, ratios.log(), torch.zeros(1, 4), -adv, torch.ones(1, 4), token_normalizer=1, seq_normalizer=1
    )
    assert pos.item() == pytest.approx(-(2.0 + 2.4 + 2.4 + 2.4))  # positive advantages: plain clip


def test_gspo_on_one_token_sequences_equals_token_ppo() -> None:
    batch = _batch(b=5, t=1)
    assert_close(_grad(AlgoConfig(loss="gspo"), batch), _grad(AlgoConfig(), batch))
    assert _loss(AlgoConfig(loss="gspo"), batch)[0].item() == pytest.approx(_loss(AlgoConfig(), batch)[0].item())


def test_gspo_uses_one_ratio_per_sequence() -> None:
    logprobs = torch.tensor([[math.log(2.0), 0.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    _, metrics = policy_loss(
        AlgoConfig(loss="gspo"), logprobs, torch.zeros(1, 3), mask, mask, token_normalizer=2, seq_normalizer=1
    )
    assert metrics["ratio/max"] == pytest.approx(math.sqrt(2.0))  # geometric mean of 2 and 1


def test_gspo_loss_is_the_mean_over_sequences_of_the_clipped_sequence_term() -> None:
    """GSPO (arXiv:2507.18071): J = (1/G) sum_i min(s_i A_i, clip(s_i, 1 - eps, 1 + eps) A_i), loss = -J."""
    old = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -9.0, -9.0]])
    logprobs = (old + torch.tensor([[0.1, 0.2, 0.3], [-0.1, 7.0, 7.0]])).requires_grad_(True)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # lengths 3 and 1
    adv = torch.tensor([[1.0, 1.0, 1.0], [-2.0, -2.0, -2.0]]) * mask
    loss, _ = policy_loss(AlgoConfig(loss="gspo"), logprobs, old, adv, mask, token_normalizer=4, seq_normalizer=2)
    s1, s2 = math.exp(0.2), math.exp(-0.1)  # geometric-mean ratios: 1.2214 (clipped to 1.2) and 0.9048
    objective = (min(s1 * 1.0, 1.2 * 1.0) + min(s2 * -2.0, min(max(s2, 0.8), 1.2) * -2.0)) / 2
    assert loss.item() == pytest.approx(-objective)  # 0.30484; token_mean would give (3 * -1.2 + 1.8097) / 4
    loss.backward()
    # d/d log pi_it of -(1/G) s_i A_i is -s_i A_i / (|o_i| G); sequence 1 is clipped, so it has no gradient
    assert_close(logprobs.grad, torch.tensor([[0.0, 0.0, 0.0], [s2 * 2.0 / 2, 0.0, 0.0]]))


def test_decoupled_ppo_equals_ppo_when_proximal_is_behaviour() -> None:
    batch = _batch()
    cfg = AlgoConfig(loss="decoupled_ppo")
    assert needs_proximal(cfg)
    assert_close(_grad(cfg, batch, prox_logprobs=batch["old_logprobs"]), _grad(AlgoConfig(), batch))
    with pytest.raises(ValueError, match="need prox_logprobs"):
        _loss(cfg, batch)


def test_tis_weights_never_exceed_cap() -> None:
    batch = _batch()
    prox = batch["old_logprobs"] + torch.linspace(-3, 3, 20).reshape(4, 5)
    _, metrics = _loss(AlgoConfig(tis_cap=2.0), batch, prox_logprobs=prox)
    assert metrics["is_weight/mean"] <= 2.0
    assert behaviour_weight(prox, batch["old_logprobs"], 2.0).max().item() == pytest.approx(2.0)


def test_masked_positions_never_affect_loss_or_metrics() -> None:
    batch = _batch()
    noisy = {k: v.clone() for k, v in batch.items()}
    hidden = batch["mask"] == 0
    for key in ("logprobs", "old_logprobs", "advantages"):
        noisy[key][hidden] = 1e3
    cfg = AlgoConfig(aggregation="seq_mean_token_mean", kl_coef=0.1)
    ref = -torch.rand(4, 5)
    loss, metrics = _loss(cfg, batch, ref_logprobs=ref)
    noisy_loss, noisy_metrics = _loss(cfg, noisy, ref_logprobs=ref)
    assert noisy_loss.item() == pytest.approx(loss.item())
    assert noisy_metrics == pytest.approx(metrics)


def test_metrics_report_mismatch_kl_and_entropy() -> None:
    batch = _batch()
    _, metrics = _loss(AlgoConfig(), batch, ref_logprobs=batch["logprobs"], entropy=torch.ones(4, 5))
    gap = ((batch["old_logprobs"] - batch["logprobs"]) * batch["mask"]).sum() / batch["mask"].sum()
    assert metrics["mismatch/logprob_diff"] == pytest.approx(gap.item())
    assert metrics["mismatch/k3"] > 0
    assert metrics["kl"] == 0.0
    assert metrics["entropy"] == pytest.approx(1.0)
    assert {"loss/policy", "clip_frac", "ratio/mean", "ratio/max"} <= metrics.keys()


def test_kl_and_entropy_terms_use_override_coefficients() -> None:
    batch = _batch()
    batch["old_logprobs"] = batch["logprobs"].clone()
    ref = batch["logprobs"] - 0.5
    base, _ = _loss(AlgoConfig(), batch)
    with_kl, _ = _loss(AlgoConfig(kl_coef=1.0), batch, ref_logprobs=ref, kl_coef=0.5)
    assert (with_kl - base).item() == pytest.approx(0.5 * (math.exp(-0.5) - 1 + 0.5))
    with_ent, _ = _loss(AlgoConfig(), batch, entropy=torch.full((4, 5), 2.0), entropy_coef=0.1)
    assert (with_ent - base).item() == pytest.approx(-0.2)


def test_compute_advantages_grpo_broadcasts_over_mask() -> None:
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    adv = compute_advantages(AlgoConfig(), torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), mask)
    s = 1 / 2**0.5
    assert_close(adv, torch.tensor([[s, s, 0.0], [-s, 0.0, 0.0]]), atol=1e-5, rtol=0)


def test_compute_advantages_kl_in_reward() -> None:
    cfg = AlgoConfig(advantage="dr_grpo", kl_coef=1.0, kl_in="reward", kl_estimator="k1")
    mask = torch.ones(2, 2)
    old = torch.tensor([[0.0, 0.0], [-1.0, -1.0]])
    ref = torch.zeros(2, 2)
    adv = compute_advantages(cfg, torch.zeros(2), torch.zeros(2), mask, old_logprobs=old, ref_logprobs=ref)
    # k1 = old - ref: sequence 1 gets penalty -(-2) = +2, so shaped rewards 0 and 2 -> advantages -1, +1
    assert_close(adv, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))


def test_trloo_sees_the_shaped_reward() -> None:
    # Two single-turn episodes of one group, both scored 1 by the verifier; shaping took 0.5 from the second.
    turns = (torch.ones(2, 1), torch.ones(2, 1), torch.zeros(2, 3, dtype=torch.long))
    shaped = torch.tensor([1.0, 0.5])
    adv = compute_advantages(
        AlgoConfig(advantage="trloo"), shaped, torch.tensor([0, 0]), torch.ones(2, 3), turns=turns
    )
    assert_close(adv, torch.tensor([[0.5] * 3, [-0.5] * 3]))


def test_trloo_charges_the_kl_in_the_reward_to_the_turn_that_paid_it() -> None:
    cfg = AlgoConfig(advantage="trloo", gamma=0.5, kl_coef=1.0, kl_in="reward", kl_estimator="k1")
    # Two turns per episode, an environment token between them; k1 = old - ref = -ref here.
    token_turns = torch.tensor([[0, 0, -1, 1, 1], [0, 0, -1, 1, 1]])
    mask = (token_turns >= 0).float()
    ref = -torch.tensor([[0.1, 0.1, 5.0, 0.2, 0.2], [0.0, 0.0, 5.0, 0.0, 0.0]])
    turns = (torch.tensor([[0.0, 1.0], [0.0, 1.0]]), torch.ones(2, 2), token_turns)
    adv = compute_advantages(
        cfg, torch.ones(2), torch.zeros(2), mask, old_logprobs=torch.zeros(2, 5), ref_logprobs=ref, turns=turns
    )
    # turn rewards: episode 0 [-0.2, 1 - 0.4], episode 1 [0, 1] (the environment token's 5.0 is nobody's);
    # returns (gamma 0.5): [-0.2 + 0.3, 0.6] and [0.5, 1] -> leave-one-out advantages [-0.4, -0.4], [0.4, 0.4]
    want = torch.tensor([[-0.4, -0.4, 0.0, -0.4, -0.4], [0.4, 0.4, 0.0, 0.4, 0.4]])
    assert_close(adv, want)


def test_rareness_compares_verifier_outcomes_not_shaped_rewards() -> None:
    cfg = AlgoConfig(advantage="dr_grpo", rareness_alpha=1.0)
    shaped = torch.tensor([1.0, 0.1, 0.0, -0.1])  # one success; length shaping made every failure different
    outcomes = torch.tensor([1.0, 0.0, 0.0, 0.0])
    adv = compute_advantages(cfg, shaped, torch.zeros(4), torch.ones(4, 1), outcomes=outcomes)
    # centred on the group mean 0.25, then weighted by (1/p) / mean: 2 for the success, 2/3 for each failure
    assert_close(adv[:, 0], torch.tensor([0.75 * 2, -0.15 * 2 / 3, -0.25 * 2 / 3, -0.35 * 2 / 3]))
    unweighted = compute_advantages(cfg, shaped, torch.zeros(4), torch.ones(4, 1))
    assert_close(unweighted[:, 0], torch.tensor([0.75, -0.15, -0.25, -0.35]))  # unique rewards: all weights 1


def test_single_rollout_uses_state_baseline() -> None:
    cfg = AlgoConfig(advantage="single_rollout", baseline_decay=0.5)
    state = AlgoState(cfg)
    mask = torch.ones(1, 2)
    first = compute_advantages(cfg, torch.tensor([1.0]), torch.tensor([0]), mask, item_ids=["a"], state=state)
    second = compute_advantages(cfg, torch.tensor([0.0]), torch.tensor([0]), mask, item_ids=["a"], state=state)
    assert first.tolist() == [[1.0, 1.0]]  # nothing seen yet: baseline 0
    assert second.tolist() == [[-1.0, -1.0]]  # baseline after the first visit: 1.0
    with pytest.raises(ValueError, match="needs its state"):
        compute_advantages(cfg, torch.tensor([0.0]), torch.tensor([0]), mask)


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ValueError, match="group_ids has shape"):
        compute_advantages(AlgoConfig(), torch.zeros(3), torch.zeros(2), torch.ones(3, 4))
    batch = _batch()
    with pytest.raises(ValueError, match="advantages has shape"):
        _loss(AlgoConfig(), {**batch, "advantages": torch.zeros(4)})
