"""Image prompts through the vLLM engine: vLLM gets each prompt with one placeholder per image plus the images,
expands them into the same tokens as the model's processor, and its behaviour log-probs (placeholders excluded
from sampling, as the learner excludes them) equal the learner's teacher-forced log-probs, before and after a
weight sync. A model whose vLLM code cannot load here is a config error that says why."""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Iterator
from functools import partial

import pytest
import torch
from conftest import single_thread
from helpers.vision_models import encode, picture, rollout_of, tiny_idefics3

from verity.model.config import ModelConfig
from verity.model.lora import save_policy
from verity.model.modeling import token_logprobs
from verity.model.tiny_vl import build_tiny_vl
from verity.model.tokenizer import build_char_tokenizer
from verity.model.vision import media_of, placeholder_ids
from verity.rollout.engine import EngineSpec
from verity.rollout.registry import build_engine
from verity.rollout.sync_check import text_probe, verify_sync
from verity.schema import ConfigError
from verity.train.batching import collate
from verity.types import SamplingParams

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (docs/vllm.md)"),
    pytest.mark.usefixtures("one_thread"),
]
LOGPROB_TOL = 1e-4  # fp32 on both sides, as in tests/rollout/test_vllm.py


@pytest.fixture(scope="module")
def idefics(tmp_path_factory) -> Iterator:
    """A tiny Idefics3 64 wide (vLLM's CPU attention needs heads of 32 or more), saved with its processor, and a
    vLLM engine on the saved copy."""
    with single_thread():
        torch.manual_seed(0)
        model, processor = tiny_idefics3(width=64)
    path = tmp_path_factory.mktemp("idefics64")
    save_policy(model, processor, path)
    engine = build_engine("vllm", EngineSpec(str(path), processor.tokenizer, "float32", "cpu", seed=0))
    yield model.eval(), processor, engine
    engine.close()


def gap(model, processor, prompts, outputs, temperature: float) -> float:
    """Largest |behaviour log-prob - learner teacher-forced log-prob| over every sampled token."""
    rows = [
        rollout_of(p, c.token_ids, g) for g, (p, out) in enumerate(zip(prompts, outputs, strict=True)) for c in out
    ]
    batch = collate(rows, processor.tokenizer.pad_token_id)
    with torch.no_grad():
        teacher, _ = token_logprobs(model, batch, temperature)
    behaviour = torch.tensor([lp for out in outputs for c in out for lp in c.logprobs])
    assert len(behaviour) == int(batch.loss_mask.sum()) > 0
    return float((behaviour - teacher[batch.loss_mask.bool()]).abs().max())


@pytest.mark.slow  # vLLM's engine starts in 30-50 s on a loaded 2-core CPU
def test_behaviour_logprobs_on_image_prompts_equal_the_learners(idefics) -> None:
    model, processor, engine = idefics
    prompts = [encode(processor, "Colour?", picture(c)) for c in ("red", "blue", "green")]
    prompts.append(encode(processor, "A longer question here?", picture("yellow")))
    outputs = engine.generate(prompts, SamplingParams(max_new_tokens=6, temperature=0.8, n=3))
    assert gap(model, processor, prompts, outputs, 0.8) < LOGPROB_TOL
    forced = engine.logprobs(prompts[:1], [outputs[0][0].token_ids], 0.8)[0]
    assert forced == pytest.approx(outputs[0][0].logprobs, abs=LOGPROB_TOL)
    # The image is read: the same words about another picture are scored otherwise.
    other = engine.logprobs([encode(processor, "Colour?", picture("white"))], [outputs[0][0].token_ids], 0.8)
    assert max(abs(a - b) for a, b in zip(other[0], forced, strict=True)) > 1e-3


@pytest.mark.slow
def test_a_weight_sync_reaches_vllm_and_placeholders_are_never_written(idefics) -> None:
    """New weights under which the image placeholder is the likeliest next token everywhere: vLLM never samples
    it (the learner scores under the same exclusion), and its log-probs are the new policy's."""
    model, processor, engine = idefics
    prompts = [encode(processor, "Colour?", picture(c)) for c in ("red", "blue")]
    before = engine.generate(prompts, SamplingParams(max_new_tokens=5, temperature=1.0, n=2))
    new = copy.deepcopy(model)
    image = placeholder_ids(new)[0]
    torch.manual_seed(1)
    seen: list[torch.Tensor] = []
    hook = new.lm_head.register_forward_hook(lambda module, args, out: seen.append(args[0][0, -1]))
    with torch.no_grad():
        for p in new.parameters():
            p.add_(0.05 * torch.randn_like(p))
        forward = partial(new, input_ids=torch.tensor([prompts[0]]), **media_of(prompts[0]))
        forward()
        hidden = seen[-1]  # the head's input at the first completion position: aim the placeholder's row at it
        new.lm_head.weight[image] = 30 * hidden / hidden.square().sum()
        unmasked = forward().logits[0, -1].softmax(-1)
    hook.remove()
    assert unmasked[image] > 0.5  # without the exclusion, the placeholder would be the likeliest next token
    try:
        engine.load_weights(iter(new.state_dict().items()), version=1)
        after = engine.generate(prompts, SamplingParams(max_new_tokens=5, temperature=1.0, n=2))
        assert {c.version for out in after for c in out} == {1}
        assert image not in {t for out in after for c in out for t in c.token_ids}
        assert gap(new, processor, prompts, after, 1.0) < LOGPROB_TOL
        assert gap(model, processor, prompts, after, 1.0) > 1e-2  # not the old policy's log-probs
        assert verify_sync(engine, new, text_probe(processor.tokenizer), tolerance=LOGPROB_TOL) < LOGPROB_TOL
    finally:
        engine.load_weights(iter(model.state_dict().items()), version=0)
    assert gap(model, processor, prompts, before, 1.0) < LOGPROB_TOL


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_a_model_whose_vllm_code_needs_torchvision_is_a_config_error(tmp_path) -> None:
    """vLLM's LLaVA code imports a transformers image processor that needs torchvision: the engine says so."""
    tiny = {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}
    cfg = ModelConfig(tiny=tiny, tiny_vision={"image_size": 16, "hidden_size": 64})
    model, processor = build_tiny_vl(cfg, build_char_tokenizer())
    save_policy(model, processor, tmp_path)
    with pytest.raises(
        ConfigError, match=r"rollout\.engine: vLLM cannot load LlavaForConditionalGeneration.*torchvision"
    ):
        build_engine("vllm", EngineSpec(str(tmp_path), processor.tokenizer, "float32", "cpu", seed=0))
