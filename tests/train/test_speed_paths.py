"""The fast paths must not change results: the engine's preallocated cache, shared prefill and row dropping give
the same log-probs as a teacher-forced forward, and the learner's micro-batching gives the same gradient."""

from __future__ import annotations

import pytest
import torch
from conftest import small_llama
from transformers import LlamaForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import verity.rollout.attention as attention_module
from verity.algo.config import AlgoConfig
from verity.algo.objective import PolicyObjective
from verity.model.modeling import token_logprobs
from verity.rollout.attention import decode_attention, use_decode_attention
from verity.rollout.hf import HFEngine, PreallocatedLayer
from verity.train.batching import Batch, collate, micro_batches, padding_share
from verity.train.config import TrainConfig
from verity.train.learner import Learner
from verity.train.prefix import length_buckets, prompt_groups, shared_prefix_logprobs
from verity.types import Completion, Item, Rollout, SamplingParams

EOS, PAD = 2, 0


class ByteTokenizer:
    eos_token_id = EOS
    pad_token_id = PAD

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join(str(i) for i in ids if i > 2)


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return small_llama(
        24, eos=EOS, pad=PAD, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64
    ).eval()


PROMPTS = [[1, 5, 6, 7, 8], [1, 9], [1, 10, 11], [1, 12, 13, 14, 15, 16, 17]]


def _rollouts(prompts: list[list[int]], outputs: list) -> list[Rollout]:
    item = Item(id="x", task="t", prompt="")
    return [
        Rollout(item=item, group=g, prompt_ids=p, completion=c)
        for g, (p, outs) in enumerate(zip(prompts, outputs, strict=True))
        for c in outs
    ]


EQUAL_PROMPTS = [[1, 5, 6], [1, 9, 10], [1, 11, 12], [1, 13, 14]]  # no left padding: no mask is passed


@pytest.mark.parametrize("prompts", [PROMPTS, EQUAL_PROMPTS])
@pytest.mark.parametrize("batch_size", [6, 12])  # 12 rows: finished rows stay in the batch until 2 have finished
def test_engine_logprobs_match_teacher_forcing(
    model: LlamaForCausalLM, batch_size: int, prompts: list[list[int]]
) -> None:
    engine = HFEngine(model, ByteTokenizer(), batch_size=batch_size, seed=3)
    outputs = engine.generate(prompts, SamplingParams(max_new_tokens=10, temperature=0.7, n=3))
    lengths = {len(c.token_ids) for outs in outputs for c in outs}
    assert len(lengths) > 1, "rows should finish at different steps so row dropping is exercised"
    assert all(EOS not in c.token_ids[:-1] for outs in outputs for c in outs), "no token after a stop token"
    batch = collate(_rollouts(prompts, outputs), PAD)
    with torch.no_grad():
        teacher, _ = token_logprobs(model, batch, temperature=0.7)
    mask = batch.loss_mask.bool()
    torch.testing.assert_close(batch.old_logprobs[mask], teacher[mask], atol=2e-5, rtol=0)


def test_engine_greedy_matches_generate(model: LlamaForCausalLM) -> None:
    engine = HFEngine(model, ByteTokenizer())
    outputs = engine.generate(PROMPTS, SamplingParams(max_new_tokens=8, temperature=0.0))
    for prompt, (completion,) in zip(PROMPTS, outputs, strict=True):
        with torch.no_grad():
            ref = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=8, pad_token_id=PAD)
        expected = ref[0, len(prompt) :].tolist()
        if EOS in expected:
            expected = expected[: expected.index(EOS) + 1]
        assert completion.token_ids == expected


def test_preallocated_layer_grows_in_place_and_refuses_overflow() -> None:
    layer = PreallocatedLayer(capacity=3)
    k = torch.arange(2 * 1 * 2 * 4, dtype=torch.float32).view(2, 1, 2, 4)
    keys, _ = layer.update(k, k)
    torch.testing.assert_close(keys, k)
    storage = layer._keys.data_ptr()
    keys, _ = layer.update(k[:, :, :1] + 100, k[:, :, :1])
    assert layer._keys.data_ptr() == storage and keys.shape == (2, 1, 3, 4)
    torch.testing.assert_close(keys[:, :, 2], k[:, :, 0] + 100)
    layer.batch_select_indices(torch.tensor([1]))
    torch.testing.assert_close(layer.keys[0, :, :2], k[1])
    with pytest.raises(RuntimeError, match="KV cache full"):
        layer.update(k[:1, :, :1], k[:1, :, :1])


def test_preallocated_layer_repeats_rows_for_each_sample() -> None:
    layer = PreallocatedLayer(capacity=4)
    k = torch.randn(2, 3, 2, 5)
    layer.update(k, -k)
    layer.batch_repeat_interleave(3)
    assert layer.keys.shape == (6, 3, 2, 5)
    torch.testing.assert_close(layer.keys, k.repeat_interleave(3, dim=0))
    torch.testing.assert_close(layer.values, -k.repeat_interleave(3, dim=0))
    new = torch.randn(6, 3, 1, 5)
    keys, _ = layer.update(new, new)
    torch.testing.assert_close(keys[:, :, 2], new[:, :, 0])


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
@pytest.mark.parametrize("masked", [False, True])
def test_decode_attention_equals_sdpa(kv_heads: int, masked: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(5, 4, 1, 8, generator=gen)
    key, value = torch.randn(2, 5, kv_heads, 7, 8, generator=gen)
    module = torch.nn.Module()
    module.num_key_value_groups = 4 // kv_heads
    mask = None
    if masked:  # left padding: row r cannot see its first r positions
        mask = (torch.arange(7)[None, :] >= torch.arange(5)[:, None])[:, None, None, :]
    with torch.no_grad():
        out, _ = decode_attention(module, query, key, value, mask, scaling=0.3)
        ref, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.3)
    assert out.shape == ref.shape == (5, 1, 4, 8)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)


def test_decode_attention_leaves_unknown_features_to_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    query, key, value = torch.randn(3, 2, 2, 1, 4)
    module = torch.nn.Module()
    module.num_key_value_groups = 1
    seen: list[dict] = []

    def recording_sdpa(*args, **kwargs):
        seen.append(kwargs)
        return sdpa_attention_forward(*args)

    monkeypatch.setattr(attention_module, "sdpa_attention_forward", recording_sdpa)
    with torch.no_grad():
        decode_attention(module, query, key, value, None, softcap=30.0)
    assert seen and seen[0].get("softcap") == 30.0  # the call with a feature it does not know reached SDPA
    monkeypatch.undo()
    with torch.no_grad():
        out, _ = decode_attention(module, query, key, value, None, sliding_window=None, position_ids=None)
        ref, _ = sdpa_attention_forward(module, query, key, value, None)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)


def test_decode_attention_is_switched_on_for_sdpa_models_only(tmp_path) -> None:
    sdpa = small_llama(12, eos=EOS, pad=PAD)
    eager = small_llama(12, eos=EOS, pad=PAD, attn_implementation="eager")
    assert use_decode_attention(sdpa) and sdpa.config._attn_implementation == "verity"
    assert not use_decode_attention(eager) and eager.config._attn_implementation == "eager"
    sdpa.save_pretrained(tmp_path)
    reloaded = type(sdpa).from_pretrained(tmp_path)
    assert reloaded.config._attn_implementation == "sdpa"  # the switch is not saved with the model


def _batch_of_lengths(lengths: list[int]) -> Batch:
    """Rows of a two-token prompt plus a completion, ``lengths`` tokens in all."""
    item = Item(id="x", task="t", prompt="")
    rollouts = []
    for g, n in enumerate(lengths):
        tokens = [3 + (g + i) % 20 for i in range(n - 2)]
        completion = Completion(tokens, [-1.0] * len(tokens), "", "stop")
        rollouts.append(Rollout(item=item, group=g, prompt_ids=[1, 4], completion=completion))
    return collate(rollouts, PAD)


def test_token_budget_cuts_micro_batches_by_padded_size() -> None:
    batch = _batch_of_lengths([3, 10, 4, 4, 9, 3])
    parts = micro_batches(batch, size=4, max_tokens=12)
    # sorted lengths 3,3,4,4,9,10: [3,3,4] pads to 3x4=12; adding 4 would make 16 > 12; 9 and 10 exceed alone.
    assert [p.attention_mask.sum(-1).tolist() for p in parts] == [[3, 3, 4], [4], [9], [10]]
    assert [p.input_ids.shape[1] for p in parts] == [4, 4, 9, 10]
    assert padding_share(parts) == pytest.approx(1 - 33 / 35)
    assert [len(p) for p in micro_batches(batch, size=4)] == [4, 2]


@pytest.mark.slow
def test_micro_batching_leaves_the_gradient_unchanged(model: LlamaForCausalLM) -> None:
    batch = _batch_of_lengths([3, 10, 4, 4, 9, 3])
    batch.advantages = batch.loss_mask * torch.linspace(-1, 1, len(batch))[:, None]
    grads = []
    for size, tokens in ((64, None), (2, None), (64, 12)):
        trained = LlamaForCausalLM(model.config)
        trained.load_state_dict(model.state_dict())
        cfg = TrainConfig(micro_batch_size=size, micro_batch_tokens=tokens, lr=1e-3)
        learner = Learner(trained, cfg, PolicyObjective(AlgoConfig()), temperature=1.0, seed=0)
        learner.optimizer.step = lambda: None  # keep the weights; only the gradient is compared
        learner.step(batch)
        grads.append(torch.cat([p.grad.flatten() for p in trained.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(grads[2], grads[0], atol=1e-6, rtol=1e-4)


def _grouped_batch() -> Batch:
    """Two prompts of different lengths, three completions of different lengths each."""
    item = Item(id="x", task="t", prompt="")
    rollouts = []
    for g, prompt in enumerate(([1, 5, 6, 7], [1, 9])):
        for k, tokens in enumerate(([3, 4], [5, 6, 7, 8], [9])):
            completion = Completion([t + g + k for t in tokens], [-1.5] * len(tokens), "", "stop")
            rollouts.append(Rollout(item=item, group=g, prompt_ids=prompt, completion=completion))
    batch = collate(rollouts, PAD)
    batch.advantages = batch.loss_mask * torch.linspace(-1, 1, len(batch))[:, None]
    return batch


def test_prompt_groups_find_shared_prefixes() -> None:
    starts, owner, prefixes = prompt_groups(_grouped_batch())
    assert starts.tolist() == [4, 4, 4, 2, 2, 2]
    assert owner.tolist() == [0, 0, 0, 1, 1, 1]
    assert prefixes == [(1, 5, 6, 7), (1, 9)]
    assert prompt_groups(_grouped_batch().select(torch.tensor([0, 3]))) is None  # nothing shared


@pytest.mark.slow
def test_shared_prompt_forward_equals_the_plain_forward(model: LlamaForCausalLM) -> None:
    batch = _grouped_batch()
    mask = batch.loss_mask.bool()
    plain, plain_entropy = token_logprobs(model, batch, 0.8, with_entropy=True)
    for overhead in (32, 0):  # one bucket of continuations; one bucket per continuation length
        shared, shared_entropy = shared_prefix_logprobs(model, batch, prompt_groups(batch), 0.8, True, overhead)
        torch.testing.assert_close(shared[mask], plain[mask], atol=1e-5, rtol=0)
        torch.testing.assert_close(shared_entropy[mask], plain_entropy[mask], atol=1e-5, rtol=0)
        assert shared[~mask].abs().max() == 0
    grads = []
    for share in (False, True):
        trained = LlamaForCausalLM(model.config)
        trained.load_state_dict(model.state_dict())
        learner = Learner(
            trained, TrainConfig(share_prompts=share), PolicyObjective(AlgoConfig()), temperature=0.8, seed=0
        )
        assert learner.share_prompts is share
        learner.optimizer.step = lambda: None
        learner.step(batch)
        grads.append(torch.cat([p.grad.flatten() for p in trained.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-4)


def test_length_buckets_minimise_computed_tokens() -> None:
    # [1, 1, 1] + [10] costs 3 + 2 + 10 + 2 = 17 tokens; one bucket costs 4 x 10 + 2 = 42.
    assert length_buckets([10, 1, 1, 1], overhead=2) == [[1, 2, 3], [0]]
    # With a large per-call overhead, one bucket (140) beats two (213).
    assert length_buckets([10, 1, 1, 1], overhead=100) == [[1, 2, 3, 0]]
    assert sorted(i for run in length_buckets([5, 3, 9, 3, 7], overhead=0) for i in run) == [0, 1, 2, 3, 4]
