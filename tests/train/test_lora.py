"""LoRA: a run trains the adapters and only the adapters; syncs, checkpoints and saved models carry them."""

from __future__ import annotations

import pytest
import torch
from conftest import small_llama
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from verity.algo.config import AlgoConfig
from verity.algo.objective import PolicyObjective
from verity.model.config import LoraConfig
from verity.model.lora import apply_lora, save_policy, trainable_state_dict
from verity.model.modeling import token_logprobs
from verity.rollout.hf import HFEngine
from verity.schema import ConfigError
from verity.train.batching import collate
from verity.train.config import TrainConfig
from verity.train.learner import Learner
from verity.types import Completion, Item, Rollout, SamplingParams

EOS, PAD = 2, 0


class DigitTokenizer:
    eos_token_id = EOS
    pad_token_id = PAD

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(str(i % 10) for i in ids if i > 2)

    def save_pretrained(self, path: object) -> None:
        """Nothing to save: the test tokenizer is code."""


def tiny_llama() -> LlamaForCausalLM:
    return small_llama(
        16, eos=EOS, pad=PAD, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=32
    )


def rewarded_batch():
    """Two completions of one prompt: tokens [7, 7] with advantage +1 and [9, 9] with advantage -1."""
    item = Item(id="a", task="t", prompt="")
    rollouts = [
        Rollout(item=item, group=0, prompt_ids=[1, 5, 6], completion=Completion(tokens, [-2.7] * 2, "", "stop"))
        for tokens in ([7, 7], [9, 9])
    ]
    batch = collate(rollouts, PAD)
    batch.advantages = batch.loss_mask * torch.tensor([[1.0], [-1.0]])
    return batch


@pytest.mark.slow
def test_lora_trains_adapters_and_never_touches_frozen_weights() -> None:
    model = apply_lora(tiny_llama(), LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert adapters and all("lora_" in n for n in adapters)
    assert len(adapters) == 2 * 2 * 3  # A and B, 2 layers, 3 target modules
    batch = rewarded_batch()
    learner = Learner(model, TrainConfig(lr=5e-2), PolicyObjective(AlgoConfig()), temperature=1.0, seed=0)
    with torch.no_grad():
        before, _ = token_logprobs(model, batch, 1.0)
    for _ in range(5):
        learner.step(batch)
    with torch.no_grad():
        after, _ = token_logprobs(model, batch, 1.0)
    gain = ((after - before) * batch.loss_mask).sum(-1)  # (2,) change in each completion's log-likelihood
    assert gain[0] > 0.1 and gain[1] < -0.1
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, adapters[n])]
    assert any("lora_B" in n for n in changed) and any("lora_A" in n for n in changed)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[name]), f"frozen weight {name} changed"


def test_only_adapters_are_synced_and_checkpointed() -> None:
    lora = LoraConfig(r=4, alpha=8, target_modules="all-linear")
    model = apply_lora(tiny_llama(), lora)
    learner = Learner(model, TrainConfig(lr=5e-2), PolicyObjective(AlgoConfig()), temperature=1.0, seed=0)
    learner.step(rewarded_batch())
    weights = dict(learner.weights())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(weights) == trainable
    assert set(learner.state_dict()["model"]) == trainable
    follower = apply_lora(tiny_llama(), lora)
    engine = HFEngine(follower, DigitTokenizer())
    engine.load_weights(weights.items(), version=1)
    prompts = [[1, 5, 6]]
    greedy = SamplingParams(max_new_tokens=6, temperature=0.0)
    ours = HFEngine(model, DigitTokenizer()).generate(prompts, greedy)[0][0]
    theirs = engine.generate(prompts, greedy)[0][0]
    assert theirs.token_ids == ours.token_ids
    torch.testing.assert_close(torch.tensor(theirs.logprobs), torch.tensor(ours.logprobs))
    fresh = Learner(
        apply_lora(tiny_llama(), LoraConfig(r=2)), TrainConfig(), PolicyObjective(AlgoConfig()), 1.0, 0
    )
    with pytest.raises(ValueError, match="does not fit this model"):
        fresh.load_state_dict(learner.state_dict())


def test_saved_merged_and_adapter_models_reproduce_the_policy(tmp_path) -> None:
    from peft import PeftModel

    model = apply_lora(tiny_llama(), LoraConfig(r=4, alpha=8))
    Learner(model, TrainConfig(lr=5e-2), PolicyObjective(AlgoConfig()), 1.0, 0).step(rewarded_batch())
    ids = torch.tensor([[1, 5, 6, 7, 7]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    save_policy(model, DigitTokenizer(), tmp_path / "merged", "merged")
    save_policy(model, DigitTokenizer(), tmp_path / "adapter", "adapter")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    adapter = PeftModel.from_pretrained(tiny_llama(), tmp_path / "adapter")
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(adapter(input_ids=ids).logits, expected, atol=1e-6, rtol=1e-5)
    assert trainable_state_dict(model).keys() != model.state_dict().keys()


def test_unknown_target_module_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.lora\.target_modules"):
        apply_lora(tiny_llama(), LoraConfig(target_modules=["no_such_proj"]))
