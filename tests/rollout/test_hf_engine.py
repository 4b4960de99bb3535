"""The transformers engine: behaviour log-probs equal a teacher-forced forward, greedy equals a hand-written
argmax decode, finish reasons, nucleus sampling and seeding."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from conftest import encode, sevens_model, single_thread, tiny_llama

from verity.model.modeling import token_logprobs
from verity.rollout.hf import HFEngine
from verity.train.batching import collate
from verity.types import Completion, Item, Rollout, SamplingParams

pytestmark = pytest.mark.usefixtures("one_thread")

# Float32 on CPU: the cached decode and the full forward differ only by summation order (~1e-6 observed).
LOGPROB_TOL = 1e-4
PROMPTS = ["<|user|>12<|assistant|>", "<|user|>hello there<|assistant|>", "<|user|>7<|assistant|>", "ab"]


@pytest.fixture(scope="module")
def sevens(char_tokenizer) -> Iterator:
    with single_thread():
        yield sevens_model(char_tokenizer)


def prompt_ids(tokenizer) -> list[list[int]]:
    return [encode(tokenizer, p) for p in PROMPTS]


def teacher_forced(
    model, tokenizer, prompts: list[list[int]], outputs: list[list[Completion]], temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(engine log-probs, teacher-forced log-probs) on every completion token, flattened."""
    rollouts = [
        Rollout(item=Item(id=str(g), task="t", prompt=""), group=g, prompt_ids=p, completion=c)
        for g, (p, outs) in enumerate(zip(prompts, outputs, strict=True))
        for c in outs
    ]
    batch = collate(rollouts, tokenizer.pad_token_id)
    with torch.no_grad():
        forced, _ = token_logprobs(model, batch, temperature)
    mask = batch.loss_mask.bool()
    return batch.old_logprobs[mask], forced[mask]


@pytest.mark.parametrize("batch_size", [64, 3])
def test_behaviour_logprobs_match_teacher_forcing(sevens, char_tokenizer, batch_size: int) -> None:
    engine = HFEngine(sevens, char_tokenizer, batch_size=batch_size, seed=0)
    prompts = prompt_ids(char_tokenizer)
    outputs = engine.generate(prompts, SamplingParams(max_new_tokens=5, temperature=0.8, n=4))
    assert [len(outs) for outs in outputs] == [4] * len(prompts)
    lengths = {len(c.token_ids) for outs in outputs for c in outs}
    assert len(lengths) > 1, "the test needs rows that finish early next to rows that run to the limit"
    engine_lp, forced_lp = teacher_forced(sevens, char_tokenizer, prompts, outputs, 0.8)
    assert len(engine_lp) == sum(len(c.token_ids) for outs in outputs for c in outs)
    torch.testing.assert_close(engine_lp, forced_lp, atol=LOGPROB_TOL, rtol=0)


def test_logprobs_match_on_an_untrained_model(char_tokenizer) -> None:
    model = tiny_llama(char_tokenizer)
    prompts = prompt_ids(char_tokenizer)
    outputs = HFEngine(model, char_tokenizer, seed=1).generate(prompts, SamplingParams(8, temperature=1.3, n=2))
    engine_lp, forced_lp = teacher_forced(model, char_tokenizer, prompts, outputs, 1.3)
    torch.testing.assert_close(engine_lp, forced_lp, atol=LOGPROB_TOL, rtol=0)


def argmax_decode(model, prompt: list[int], max_new_tokens: int, eos: int) -> list[int]:
    """Greedy decoding the slow way: a full forward of the unpadded sequence for every new token."""
    ids = list(prompt)
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
        ids.append(int(logits.argmax()))
        if ids[-1] == eos:
            break
    return ids[len(prompt) :]


@pytest.mark.parametrize("trained", [False, True])
def test_greedy_equals_argmax_decode(sevens, char_tokenizer, trained: bool) -> None:
    model = sevens if trained else tiny_llama(char_tokenizer)
    prompts = prompt_ids(char_tokenizer)
    outputs = HFEngine(model, char_tokenizer).generate(prompts, SamplingParams(10, temperature=0.0))
    for prompt, outs in zip(prompts, outputs, strict=True):
        expected = argmax_decode(model, prompt, 10, char_tokenizer.eos_token_id)
        assert outs[0].token_ids == expected
        assert outs[0].finish_reason == ("stop" if expected[-1] == char_tokenizer.eos_token_id else "length")
    if trained:  # after any number of 7s, another 7 stays likelier than eos
        assert {o[0].text for o in outputs} == {"7" * 10}


def test_finish_reasons_and_text(sevens, char_tokenizer) -> None:
    eos = char_tokenizer.eos_token_id
    outputs = HFEngine(sevens, char_tokenizer, seed=0).generate(
        prompt_ids(char_tokenizer), SamplingParams(4, temperature=1.0, n=8)
    )
    completions = [c for outs in outputs for c in outs]
    reasons = {c.finish_reason for c in completions}
    assert reasons == {"stop", "length"}
    for c in completions:
        assert eos not in c.token_ids[:-1]
        assert len(c.logprobs) == len(c.token_ids)
        if c.finish_reason == "stop":
            assert c.token_ids[-1] == eos and len(c.token_ids) <= 4
            assert c.text == char_tokenizer.decode(c.token_ids[:-1])
        else:
            assert len(c.token_ids) == 4 and c.token_ids[-1] != eos
            assert c.text == char_tokenizer.decode(c.token_ids)


def test_tiny_top_p_samples_the_top_token(char_tokenizer) -> None:
    model = tiny_llama(char_tokenizer)
    prompts = prompt_ids(char_tokenizer)
    greedy = HFEngine(model, char_tokenizer).generate(prompts, SamplingParams(6, temperature=0.0))
    nucleus = HFEngine(model, char_tokenizer, seed=3).generate(prompts, SamplingParams(6, top_p=1e-6, n=3))
    for g, outs in zip(greedy, nucleus, strict=True):
        for c in outs:
            assert c.token_ids == g[0].token_ids
            # log-probs stay those of the untruncated distribution (equal to greedy's at temperature 1)
            torch.testing.assert_close(torch.tensor(c.logprobs), torch.tensor(g[0].logprobs), atol=1e-5, rtol=0)


def test_top_p_samples_only_inside_the_nucleus(sevens, char_tokenizer) -> None:
    prompts = prompt_ids(char_tokenizer)
    top_p = 0.6
    outputs = HFEngine(sevens, char_tokenizer, seed=0).generate(prompts, SamplingParams(5, top_p=top_p, n=8))
    for prompt, outs in zip(prompts, outputs, strict=True):
        for c in outs:
            ids = torch.tensor([prompt + c.token_ids])
            with torch.no_grad():
                probs = torch.softmax(sevens(input_ids=ids).logits[0, len(prompt) - 1 : -1], dim=-1)  # (L, V)
            for t, token in enumerate(c.token_ids):
                mass_above = probs[t][probs[t] > probs[t, token]].sum().item()
                assert mass_above <= top_p + 1e-5, f"token {token} lies outside the top-{top_p} nucleus"


def test_same_seed_same_samples(char_tokenizer) -> None:
    model = tiny_llama(char_tokenizer)
    prompts = prompt_ids(char_tokenizer)
    params = SamplingParams(6, temperature=1.0, n=3)

    def tokens(seed: int) -> list[list[int]]:
        outputs = HFEngine(model, char_tokenizer, seed=seed).generate(prompts, params)
        return [c.token_ids for outs in outputs for c in outs]

    assert tokens(5) == tokens(5)
    assert tokens(5) != tokens(6)


def test_outputs_carry_the_engine_version_and_restore_train_mode(char_tokenizer) -> None:
    model = tiny_llama(char_tokenizer).train()
    engine = HFEngine(model, char_tokenizer)
    engine.load_weights(model.state_dict().items(), version=7)
    outputs = engine.generate(prompt_ids(char_tokenizer)[:1], SamplingParams(2, n=2))
    assert [c.version for c in outputs[0]] == [7, 7]
    assert model.training
