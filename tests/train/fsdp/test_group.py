"""The fsdp2 learner group as the loop sees it: two gloo ranks in spawned processes behind the Learner contract."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from verity.algo.config import AlgoConfig
from verity.algo.objective import PolicyObjective
from verity.model.modeling import token_logprobs
from verity.rollout.engine import EngineSpec
from verity.rollout.hf import build_hf_engine
from verity.rollout.sync_check import text_probe
from verity.schema import ConfigError
from verity.train.batching import Batch
from verity.train.checkpoint import ShardedPart, latest_checkpoint, load_checkpoint, save_checkpoint
from verity.train.config import TrainConfig
from verity.train.fsdp.group import (
    GroupSpec,
    LearnerDied,
    LearnerFailed,
    LearnerGroup,
    LearnerGroupError,
    LearnerTimeout,
    group_spec,
    spawned_placement,
)
from verity.train.learner import Learner

LENGTHS = [6, 17, 9, 25, 12, 7]


def rows(vocab: int, seed: int) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    width = max(LENGTHS)
    attention = (torch.arange(width)[None] < torch.tensor(LENGTHS)[:, None]).long()
    ids = torch.randint(3, vocab, (len(LENGTHS), width), generator=generator) * attention
    loss_mask = attention.float()
    loss_mask[:, :4] = 0
    advantages = torch.randn(len(LENGTHS), 1, generator=generator) * loss_mask
    old = (-4 - torch.rand(ids.shape, generator=generator)) * loss_mask
    return Batch(ids, attention, loss_mask, old, advantages)


def start_group(model_dir: Path, reference: bool = False, **fsdp: float) -> LearnerGroup:
    train = TrainConfig(
        lr=1e-2, strategy="fsdp2", learners=2, micro_batch_size=2, logit_chunk_tokens=32, fsdp=fsdp
    )
    return LearnerGroup(GroupSpec(str(model_dir), "float32", "cpu", train, AlgoConfig(), 1.0, 0, 1, reference))


@pytest.fixture(scope="module")
def group(tiny_model_dir: Path) -> Iterator[LearnerGroup]:
    # Buckets of 8 KB: the tiny model's weights come in many buckets and the export in several files.
    started = start_group(tiny_model_dir, reference=True, bucket_mb=8 / 1024)
    yield started
    started.close()


def test_the_exported_model_loads_and_gives_the_learner_logprobs(group, char_tokenizer, tmp_path) -> None:
    batch = rows(len(char_tokenizer), 0)
    metrics = group.step(batch)
    assert group.version == 1 and metrics["grad_norm"] > 0
    expected = group.logprobs(batch)  # (B, T), 0 on padding
    group.save_model(tmp_path / "final", char_tokenizer)
    assert len(list((tmp_path / "final").glob("model-*.safetensors"))) > 1
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "final", dtype=torch.float32)
    with torch.no_grad():
        loaded, _ = token_logprobs(model, batch, 1.0)
    torch.testing.assert_close(loaded * batch.attention_mask, expected, rtol=0, atol=1e-5)
    # The step moved the policy: the base model's log-probs differ by far more than the tolerance, and the
    # sharded reference (the ranks' frozen copy) still gives them.
    base = AutoModelForCausalLM.from_pretrained(group.spec.model_path, dtype=torch.float32)
    with torch.no_grad():
        before, _ = token_logprobs(base, batch, 1.0)
    assert (before * batch.attention_mask - expected).abs().max() > 1e-3
    reference = group.logprobs(batch, group.reference)
    torch.testing.assert_close(reference, before * batch.attention_mask, rtol=0, atol=1e-5)
    with pytest.raises(LearnerGroupError, match="reference's log-probs only"):
        group.logprobs(batch, base)


def test_streamed_weights_bring_an_engine_copy_to_the_policy(group, char_tokenizer) -> None:
    engine = build_hf_engine(EngineSpec(group.spec.model_path, char_tokenizer))
    partial = group.weights()
    next(partial)
    partial.close()  # a reader that stops early leaves the group in step
    engine.load_weights(group.weights(), group.version)
    batch = rows(len(char_tokenizer), 1)
    prompts = [batch.input_ids[i, :4].tolist() for i in range(len(batch))]
    completions = [batch.input_ids[i, 4:n].tolist() for i, n in enumerate(LENGTHS)]
    got = engine.logprobs(prompts, completions, 1.0)
    expected = group.logprobs(batch)
    for i, n in enumerate(LENGTHS):
        torch.testing.assert_close(torch.tensor(got[i]), expected[i, 4:n], rtol=0, atol=1e-5)
    # The probe a weight sync is verified with: the group's log-probs are the engine copy's.
    probe = text_probe(char_tokenizer)
    (learner_side,) = group.probe_logprobs(probe)
    (engine_side,) = engine.logprobs(probe.prompts, probe.completions, 1.0)
    torch.testing.assert_close(torch.tensor(learner_side), torch.tensor(engine_side), rtol=0, atol=1e-5)


def test_a_sharded_checkpoint_restores_the_learner(group, char_tokenizer, tmp_path) -> None:
    """Saved with DCP into the atomic checkpoint directory, then two more steps; restoring and repeating them
    gives the same log-probs exactly (sharded parameters, optimizer moments, schedule and version)."""
    save_checkpoint(tmp_path, 7, {"learner": group.state_dict()}, keep=2)
    saved_version = group.version
    path = latest_checkpoint(tmp_path)
    assert sorted(p.name for p in (path / "learner").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    batches = [rows(len(char_tokenizer), seed) for seed in (2, 3)]
    for batch in batches:
        group.step(batch)
    after = group.logprobs(batches[0])
    part = load_checkpoint(path)["learner"]
    base = AutoModelForCausalLM.from_pretrained(group.spec.model_path)
    single = Learner(base, group.spec.train, PolicyObjective(AlgoConfig()), 1.0, 0)
    with pytest.raises(ValueError, match=r"resume with train\.strategy=fsdp2"):
        single.load_state_dict(part)
    with pytest.raises(LearnerGroupError, match=r"resume it with train\.strategy=single"):
        group.load_state_dict(single.state_dict())
    group.load_state_dict(part)
    assert group.version == saved_version
    assert not torch.equal(group.logprobs(batches[0]), after)
    for batch in batches:
        group.step(batch)
    assert torch.equal(group.logprobs(batches[0]), after)


def test_a_silent_rank_is_a_timeout(group, char_tokenizer) -> None:
    group.timeout = 1e-3  # no step answers within a millisecond
    procs = list(group.transport.procs)
    with pytest.raises(LearnerTimeout, match=r"train\.fsdp\.timeout_s"):
        group.step(rows(len(char_tokenizer), 0))
    assert not any(p.is_alive() for p in procs)  # the group is stopped, not left waiting


def test_a_dead_rank_is_a_named_error_not_a_hang(tiny_model_dir, char_tokenizer) -> None:
    group = start_group(tiny_model_dir)
    procs = list(group.transport.procs)
    try:
        os.kill(procs[1].pid, signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(LearnerDied, match=r"rank 1 died \(killed by signal 9\)"):
            group.step(rows(len(char_tokenizer), 0))
        assert time.monotonic() - start < 10
        assert not any(p.is_alive() for p in procs)
    finally:
        group.close()


def test_a_rank_that_raises_is_a_failure_not_a_death(tiny_model_dir, tmp_path) -> None:
    # Both ranks raise on a checkpoint that is not there, report the error and end by themselves (exit code 0)
    # while the driver reads the first report: that is ``LearnerFailed`` with the traceback, never ``LearnerDied``.
    group = start_group(tiny_model_dir)
    try:
        missing = ShardedPart("learner", {}, directory=tmp_path / "missing")
        with pytest.raises(LearnerFailed, match=r"learner rank 0 failed:\nTraceback"):
            group.load_state_dict(missing)
    finally:
        group.close()


@pytest.mark.parametrize(
    ("override", "named"),
    [("model.lora.r=4", "model.lora"), ("train.fsdp.cpu_offload=true", "cpu_offload without a GPU")],
)
def test_what_the_group_does_not_support_is_a_config_error(make_config, override: str, named: str) -> None:
    cfg = make_config("train.strategy=fsdp2", "train.learners=2", override)
    with pytest.raises(ConfigError, match=re.escape(named)):
        group_spec(cfg, cfg.model.name, "cpu", 1)


def test_a_runtime_that_cannot_place_learner_ranks_is_refused_for_fsdp2(make_config) -> None:
    with pytest.raises(ConfigError, match=r"train\.strategy=fsdp2 needs a runtime that places the learner ranks"):
        make_config("train.strategy=fsdp2", "train.learners=2", "runtime.kind=helpers.user_plugins:build_runtime")
    make_config("runtime.kind=helpers.user_plugins:build_runtime")  # a user runtime is fine for one learner


def test_learners_need_the_fsdp2_strategy(make_config) -> None:
    with pytest.raises(ConfigError, match=r"train\.learners=2 needs train\.strategy=fsdp2"):
        make_config("train.learners=2")
    cfg = make_config("train.strategy=fsdp2", "train.learners=2")
    spec = group_spec(cfg, "m", *spawned_placement(cfg, "cpu"))
    assert (spec.device, spec.threads, spec.train.learners) == ("cpu", 1, 2)


def test_on_ray_the_ranks_take_the_device_and_threads_they_request(make_config) -> None:
    """With runtime.kind=ray the ranks are actors: cuda when they request GPUs (not the driver's device, and no
    check of this machine's GPU count), their CPU request as torch threads."""
    from verity.runtime.ray.learners import ray_placement

    ray = ("train.strategy=fsdp2", "train.learners=2", "runtime.kind=ray", "runtime.threads=null")
    gpus = make_config(*ray, "runtime.ray.learner_gpus=1", "runtime.ray.learner_cpus=3")
    assert ray_placement(gpus) == ("cuda", 3)
    assert ray_placement(make_config(*ray, "runtime.ray.learner_cpus=0.25")) == ("cpu", 1)


pytestmark = pytest.mark.usefixtures("one_thread")
