import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from verity.algo.losses import clipped_value_loss
from verity.train.critic import CriticTrainer, build_critic


def _tiny_lm(seed: int) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
    )
    return Qwen2ForCausalLM(config)


def _fixed_batch() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, 64, (4, 8), generator=gen)
    attention_mask = torch.ones(4, 8)
    mask = torch.zeros(4, 8)
    mask[:, 3:] = 1.0
    returns = torch.tensor([1.0, 0.0, 1.0, 0.0])[:, None] * mask
    return input_ids, attention_mask, mask, returns


def test_clipped_value_loss_hand_computed() -> None:
    values, old, returns = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([2.0, -1.0])
    # token 0: V-R = -1; clipped V = 0.2 -> (0.2-2)^2 = 3.24 -> 0.5 * 3.24; token 1: plain 1.0, clipped 1.0
    assert clipped_value_loss(values, old, returns, 0.2).tolist() == pytest.approx([1.62, 0.5])
    assert clipped_value_loss(values, old, returns, None).tolist() == pytest.approx([0.5, 0.5])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["policy", "separate"])
def test_value_loss_falls_on_a_fixed_batch(kind: str) -> None:
    policy = _tiny_lm(0)
    critic = build_critic(kind, policy, _tiny_lm(1) if kind == "separate" else None)
    trainer = CriticTrainer(critic, lr=3e-3, value_clip=None)
    input_ids, attention_mask, mask, returns = _fixed_batch()
    policy_before = [p.detach().clone() for p in policy.parameters()]
    losses = [trainer.step(input_ids, attention_mask, mask, torch.zeros(4, 8), returns)["critic/loss"]]
    for _ in range(40):
        losses.append(trainer.step(input_ids, attention_mask, mask, torch.zeros(4, 8), returns)["critic/loss"])
    assert losses[0] == pytest.approx(0.25)  # zero-initialised head: 0.5 * mean(R^2) with R in {0, 1}
    assert losses[-1] < 0.5 * losses[0]
    if kind == "policy":
        assert all(torch.equal(a, b) for a, b in zip(policy_before, policy.parameters(), strict=True))


def test_values_are_shifted_to_match_logprob_alignment() -> None:
    critic = build_critic("policy", _tiny_lm(0))
    torch.nn.init.ones_(critic.head.bias)
    values = critic.values(torch.randint(0, 64, (2, 5)), torch.ones(2, 5))
    assert values.shape == (2, 5)
    assert values[:, 0].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="needs a critic model"):
        build_critic("separate", _tiny_lm(0))
