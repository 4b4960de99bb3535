"""Token log-probs with the output head applied chunk by chunk: the same values and gradients as the full
(B, T, V) computation, at a fraction of its memory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import small_llama, subprocess_env

from verity.model.modeling import check_output_head, token_logprobs
from verity.train.batching import Batch


def full_logprobs(model: torch.nn.Module, rows: Batch, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: the model's own (B, T, V) logits, one log-softmax over all of them."""
    positions = (rows.attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask, position_ids=positions).logits
    logp_all = torch.log_softmax(logits[:, :-1] / temperature, dim=-1)  # (B, T-1, V), float64 here
    picked = logp_all.gather(-1, rows.input_ids[:, 1:, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return torch.nn.functional.pad(picked, (1, 0)), torch.nn.functional.pad(entropy, (1, 0))


def ragged_rows(vocab: int, lengths: list[int]) -> Batch:
    generator = torch.Generator().manual_seed(1)
    width = max(lengths)
    ids = torch.randint(0, vocab, (len(lengths), width), generator=generator)
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
    zeros = torch.zeros(ids.shape)
    return Batch(ids * mask, mask, mask.float(), zeros, zeros)


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_chunked_logprobs_and_entropy_equal_the_full_computation(chunk: int) -> None:
    model = small_llama(97, eos=1, pad=0, tie_word_embeddings=True).double()
    rows = ragged_rows(97, [5, 12, 9])
    expected_lp, expected_ent = full_logprobs(model, rows, 0.7)
    lp, ent = token_logprobs(model, rows, 0.7, with_entropy=True, chunk_tokens=chunk)
    torch.testing.assert_close(lp, expected_lp, rtol=0, atol=1e-12)
    torch.testing.assert_close(ent, expected_ent, rtol=0, atol=1e-12)
    # Gradients through the recomputed chunks equal those through the full logits.
    weights = torch.randn(lp.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ((expected_lp + expected_ent) * weights).sum().backward()
    expected_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ((lp + ent) * weights).sum().backward()
    for expected, p in zip(expected_grads, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, expected, rtol=1e-10, atol=1e-12)


TINY = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=2,
    head_dim=16,
)


def sharp_head(model: torch.nn.Module) -> torch.nn.Module:
    """Large output-head weights, so that a rescaling of the logits moves the log-probs far (a random tiny model
    is otherwise nearly uniform whatever its scale)."""
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(200.0)
    return model.double().eval()


@pytest.mark.parametrize(
    ("kind", "key", "value", "neutral"),
    [
        ("cohere", "logit_scale", 0.0625, 1.0),
        ("granite", "logits_scaling", 8.0, 1.0),
        ("gemma2", "final_logit_softcapping", 3.0, None),
    ],
)
def test_models_that_rescale_their_logits_get_their_forwards_logprobs(kind: str, key: str, value, neutral) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(kind, **TINY, **{key: value}, tie_word_embeddings=False)
    model = sharp_head(AutoModelForCausalLM.from_config(config))
    rows = ragged_rows(97, [6, 11])
    expected, _ = full_logprobs(model, rows, 1.0)
    lp, _ = token_logprobs(model, rows, 1.0, chunk_tokens=5)
    torch.testing.assert_close(lp * rows.attention_mask, expected * rows.attention_mask, rtol=0, atol=1e-9)
    check_output_head(model)
    # The transform is what makes the two agree: without it, the gap is far above the check's tolerance.
    setattr(config, key, neutral)
    unscaled, _ = token_logprobs(model, rows, 1.0)
    assert (unscaled - expected).abs().max() > 0.1


def test_a_model_that_transforms_its_logits_unknowingly_is_refused() -> None:
    model = sharp_head(small_llama(97, eos=1, pad=0))
    forward = model.forward

    def shifted(*args, **kwargs):  # a model that halves its logits in its own forward
        out = forward(*args, **kwargs)
        out.logits = out.logits / 2
        return out

    model.forward = shifted
    with pytest.raises(ValueError, match=r"model type 'llama'.*scale_logits"):
        check_output_head(model)
    model.forward = forward
    check_output_head(model)


PEAK_SCRIPT = """
import json, resource, sys, torch
from conftest import small_llama
from verity.model.modeling import check_output_head, token_logprobs
from verity.train.batching import Batch

vocab, rows, length, chunk = 128_256, 4, 512, int(sys.argv[1])
model = small_llama(vocab, eos=1, pad=0, num_hidden_layers=1, hidden_size=64, max_position_embeddings=length)
ids = torch.randint(0, vocab, (rows, length))
mask = torch.ones_like(ids)
zeros = torch.zeros(ids.shape)
batch = Batch(ids, mask, mask.float(), zeros, zeros)

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

before = rss_mb()
lp, ent = token_logprobs(model, batch, 1.0, with_entropy=True, chunk_tokens=chunk)
(lp.sum() + ent.sum()).backward()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak_mb": peak - before}))
"""


def peak_extra_mb(chunk: int) -> float:
    """Peak resident memory (MB) a forward and backward of chunked log-probs and entropies adds, in a fresh
    process: 4 x 512 positions over a 128,256-token vocabulary."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(chunk)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_chunked_logprobs_stay_far_below_one_full_logits_tensor() -> None:
    """One float32 logits tensor of the whole batch is 4 x 511 x 128,256 x 4 B = 1,049 MB, and the unchunked
    forward and backward hold about five such tensors at once (measured: 5.0 GB added; bench/bench_fsdp.py). With
    256-position chunks the same forward and backward add less than one of them (measured: 750 MB, about six
    131 MB chunk-sized buffers during a chunk's recomputation and backward)."""
    assert peak_extra_mb(256) < 1000
