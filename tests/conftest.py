"""Shared fixtures: tiny Llama policies built offline, and small run configs that train them in seconds."""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from verity.config import Config, load_config
from verity.model.tokenizer import build_char_tokenizer

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent


def small_llama(vocab_size: int, *, eos: int, pad: int, seed: int = 0, **settings: Any) -> LlamaForCausalLM:
    """A randomly initialised 2-layer, 32-wide Llama; ``settings`` override its config (heads, positions, ...)."""
    torch.manual_seed(seed)
    config = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
        "eos_token_id": eos,
        "pad_token_id": pad,
    }
    return LlamaForCausalLM(LlamaConfig(**{**config, **settings}))


def tiny_llama(tokenizer: PreTrainedTokenizerFast, seed: int = 0, **settings: Any) -> LlamaForCausalLM:
    """A randomly initialised 2-layer Llama over ``tokenizer`` (about 10k parameters; ``settings`` override its
    config)."""
    model = small_llama(
        len(tokenizer),
        eos=tokenizer.eos_token_id,
        pad=tokenizer.pad_token_id,
        seed=seed,
        bos_token_id=tokenizer.bos_token_id,
        **settings,
    )
    return model.eval()


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One torch thread (tiny models run ~40x faster than with threads fighting over busy cores); the previous
    count is restored, also after a run that set its own ``runtime.threads``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="session")
def char_tokenizer() -> PreTrainedTokenizerFast:
    return build_char_tokenizer()


def sevens_model(tokenizer: PreTrainedTokenizerFast, steps: int = 40, **settings: Any) -> LlamaForCausalLM:
    """A tiny policy taught by SFT to answer any chat prompt with one to six 7s and then stop, so sampled rows
    finish at different lengths (some by eos, some by hitting the length limit); ``settings`` override its
    config."""
    from verity.train.sft import demonstration_batch, sft_loss

    model = tiny_llama(tokenizer, **settings).train()
    rng = random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        prompts = [encode(tokenizer, f"<|user|>{rng.randint(0, 99)}<|assistant|>") for _ in range(16)]
        answers = [[*encode(tokenizer, "7" * rng.randint(1, 6)), tokenizer.eos_token_id] for _ in range(16)]
        loss = sft_loss(model, demonstration_batch(prompts, answers, tokenizer.pad_token_id))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def encode(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, char_tokenizer: PreTrainedTokenizerFast) -> Path:
    """A saved tiny policy (char tokenizer with chat template); read-only for tests."""
    path = tmp_path_factory.mktemp("tiny_model")
    tiny_llama(char_tokenizer).save_pretrained(path)
    char_tokenizer.save_pretrained(path)
    return path


def tiny_vl_model(cache_dir: Path) -> dict[str, Any]:
    """``model`` settings of a tiny-vl run small enough for tests; its base is built once under ``cache_dir``."""
    return {
        "name": "tiny-vl",
        "cache_dir": str(cache_dir),
        "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
        "tiny_vision": {"image_size": 16, "hidden_size": 16, "num_layers": 1},
        "warmup": {"max_steps": 4, "check_every": 2, "check_items": 8, "batch_size": 16},
    }


def loop_settings(model_dir: Path, out_dir: Path) -> dict[str, Any]:
    """A run that takes about a second per step: the 'say 7' generator task rewarded by the share of 7s."""
    return {
        "name": "run",
        "output_dir": str(out_dir),
        "seed": 0,
        "model": {"name": str(model_dir), "dtype": "float32"},
        "data": {
            "tasks": [{"source": "generator", "name": "seven", "function": "helpers.loop_tasks:say_seven"}],
            "eval_items": 4,
        },
        "rollout": {"prompts_per_step": 4, "group_size": 4, "max_new_tokens": 4},
        "reward": {"verifiers": ["helpers.loop_tasks:share_of_sevens"], "in_process": True},
        "train": {"steps": 3, "lr": 1e-3, "checkpoint_every": 1, "micro_batch_size": 8},
        "eval": {"every": 0, "k": 1, "batch_size": 16},
        "tracking": {"quiet": True, "samples_every": 1, "samples_per_step": 16},
        "runtime": {"device": "cpu", "threads": 1},
    }


@pytest.fixture
def make_config(tiny_model_dir: Path, tmp_path: Path) -> Callable[..., Config]:
    """``make_config("train.steps=5", ...)``: the loop settings above with dotted overrides, runs in tmp_path."""

    def make(*overrides: str) -> Config:
        return load_config(loop_settings(tiny_model_dir, tmp_path / "runs"), list(overrides))

    return make


def subprocess_env() -> dict[str, str]:
    """Environment for a ``verity`` subprocess: the tests' helper modules importable, one torch thread."""
    env = dict(os.environ)
    paths = [str(TESTS_DIR), str(REPO_DIR), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["OMP_NUM_THREADS"] = "1"
    return env


def verity_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "verity.cli.main", *args]
