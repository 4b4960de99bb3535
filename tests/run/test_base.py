"""Loading policies and building the offline tiny base: errors name the path, the base is cached by its
settings and reloads with plain transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from verity.build import build_tasks, held_out_keys
from verity.config import load_config
from verity.model.loading import load_policy
from verity.rewards.executor import RewardExecutor
from verity.run.base import base_cache_dir, base_warnings, ensure_tiny_base, majority_baseline
from verity.schema import ConfigError
from verity.types import Item, Score

pytestmark = pytest.mark.usefixtures("one_thread")


def test_load_policy(tiny_model_dir: Path) -> None:
    model, tokenizer = load_policy(tiny_model_dir, "auto", "cpu")
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None
    assert model.dtype == torch.float32 and model.config.num_hidden_layers == 2


@pytest.mark.parametrize("name", ["./missing_model", "/no/such/dir", "weights.bin", "runs/quick/final_model"])
def test_missing_model_path_is_a_config_error(name: str) -> None:
    """Path-like names fail at once instead of going to the hub (a minute of retries offline)."""
    with pytest.raises(ConfigError, match=r"model\.name: no model directory at"):
        load_policy(name)


def test_a_relative_path_under_an_existing_directory_is_not_a_hub_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no model directory at models/typo; check the path"):
        load_policy("models/typo")


def test_directory_without_a_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"model.name: {tmp_path} is a directory but not a Hugging Face model"):
        load_policy(str(tmp_path))


def tiny_base_config(cache: Path, *overrides: str):
    settings = {
        "model": {
            "name": "tiny",
            "cache_dir": str(cache),
            "tiny": {
                "vocab_size": 300,
                "hidden_size": 16,
                "num_layers": 1,
                "num_heads": 2,
                "intermediate_size": 32,
            },
            "warmup": {"max_steps": 3, "batch_size": 4, "check_every": 2, "check_items": 4},
        },
        "data": {
            "tasks": [{"source": "generator", "name": "seven", "function": "helpers.loop_tasks:say_seven"}],
            "eval_items": 4,
        },
        "rollout": {"max_new_tokens": 3},
        "reward": {"in_process": True},
    }
    return load_config(settings, list(overrides))


def build(cfg) -> tuple[Path, list[str]]:
    log: list[str] = []
    sources, held_out = build_tasks(cfg)
    with RewardExecutor(cfg.reward) as executor:
        path = ensure_tiny_base(cfg, sources, {it.prompt for it in held_out}, executor.score, log.append)
    return path, log


def test_tiny_base_is_built_once_and_cached(tmp_path: Path) -> None:
    cfg = tiny_base_config(tmp_path)
    path, log = build(cfg)
    assert path == base_cache_dir(cfg, held_out_keys(cfg)) and path.parent == tmp_path / "models"
    assert log[0] == f"building tiny base model into {path}"
    info = json.loads((path / "verity_base.json").read_text())
    assert info["warmup_steps"] in (2, 3) and 0.0 <= info["warmup_accuracy"] <= 1.0
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (16, 1)
    assert model.config.vocab_size == len(tokenizer) and tokenizer.chat_template
    again, log = build(cfg)
    assert again == path and log == [f"reusing cached base model {path}"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_cache_key_follows_every_shaping_setting(tmp_path: Path) -> None:
    def key(*overrides: str) -> Path:
        cfg = tiny_base_config(tmp_path, *overrides)
        return base_cache_dir(cfg, held_out_keys(cfg))

    base = key()
    assert key() == base
    shaping = ("model.warmup.max_steps=4", "model.tiny.hidden_size=8", "seed=1", "data.system_prompt=Hi")
    held_out = ("data.eval_items=5", "eval.items=3")  # which questions are held out shapes the warm-up too
    for override in shaping + held_out:
        assert key(override) != base, override
    # settings that do not shape the base share it
    assert key("train.lr=0.5", "rollout.group_size=2") == base


def test_a_majority_answer_guesser_is_not_called_competent(tmp_path: Path) -> None:
    """A scorer that credits exactly the items whose answer is 7 plays a model that always answers 7: its 90%
    clears stop_at_accuracy (0.3) but not the majority baseline, so the warm-up goes on to max_steps and says the
    base is no better than the guess."""
    cfg = tiny_base_config(
        tmp_path,
        "data.tasks.0.function=helpers.loop_tasks:mostly_seven",
        "model.warmup.max_steps=4",
        "model.warmup.check_items=20",
    )
    sources, held_out = build_tasks(cfg)

    def always_seven(items, texts):
        return [Score(float(item.answer == "7")) for item in items]

    log: list[str] = []
    path = ensure_tiny_base(cfg, sources, {it.prompt for it in held_out}, always_seven, log.append)
    info = json.loads((path / "verity_base.json").read_text())
    assert info["majority_baseline"] == pytest.approx(0.9, abs=0.05)
    assert info["warmup_accuracy"] == pytest.approx(info["majority_baseline"])
    assert info["warmup_steps"] == 4 and info["competent"] is False  # did not stop at the first check
    assert any("no better than always giving the most frequent answer" in line for line in log)
    assert base_warnings(path) and not base_warnings({"competent": True})


def test_majority_baseline_per_task() -> None:
    class Source:
        def __init__(self, name: str, answers: list[str]) -> None:
            self.name, self.answers = name, answers

        def train_item(self, index: int) -> Item:
            return Item(f"{self.name}/{index}", self.name, "p", self.answers[index % len(self.answers)])

    sources = [Source("a", ["1", "1", "2"]), Source("b", ["x", "y", "y", "y"])]
    check = [
        Item("c0", "a", "p", "1"),
        Item("c1", "a", "p", "2"),
        Item("c2", "b", "p", "y"),
        Item("c3", "b", "p", "z"),
    ]
    assert majority_baseline(sources, check, sample=12) == 0.5
