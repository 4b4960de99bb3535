"""Held-out questions stay held out whatever the cache holds: a base is keyed by the run's held-out questions, a
base warmed up on them is refused naming the overlap, and the warm-up's check items are neither held out nor
trained on, also on a small file task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_base import build, tiny_base_config
from transformers import AutoModelForCausalLM

from verity.build import build_parts, build_tasks, held_out_keys
from verity.data.images import item_key
from verity.rewards.executor import RewardExecutor
from verity.run.base import base_cache_dir, base_warnings, ensure_tiny_base
from verity.run.held_out import WARMUP_QUESTIONS, question_hash
from verity.schema import ConfigError
from verity.types import Score

pytestmark = pytest.mark.usefixtures("one_thread")


def trained_hashes(base: Path) -> set[str]:
    return set((base / WARMUP_QUESTIONS).read_text().split())


def test_a_base_built_for_one_held_out_size_never_serves_another(tmp_path: Path) -> None:
    """Thirty questions: held out q0..q3 the first time, q0..q9 the second. The first base trained on q4..q9;
    the second run gets its own base, which did not, and is refused the first one by name."""
    task = "data.tasks.0.function=helpers.loop_tasks:thirty_questions"
    small = tiny_base_config(tmp_path, task, "data.eval_items=4", "model.warmup.max_steps=12")
    large = tiny_base_config(tmp_path, task, "data.eval_items=10", "model.warmup.max_steps=12")
    first, _ = build(small)
    large_held_out = held_out_keys(large)
    assert large_held_out == {f"q{i}" for i in range(10)}
    overlap = {k for k in large_held_out if question_hash(k) in trained_hashes(first)}
    assert overlap == {f"q{i}" for i in range(4, 10)}  # what the old cache key would have served
    second, _ = build(large)
    assert second != first and second == base_cache_dir(large, held_out_keys(large))
    assert not {question_hash(k) for k in large_held_out} & trained_hashes(second)
    refused = tiny_base_config(tmp_path, task, "data.eval_items=10", f"model.name={first}")
    with pytest.raises(ConfigError, match=rf"the base at {first} was warmed up on 6 of this run's 10 held-out"):
        build_parts(refused, print)


def test_a_small_jsonl_tasks_competence_check_never_reads_a_training_row(tmp_path: Path) -> None:
    """40 rows, 10 held out: the check takes 10 of the other 30 (a third, not the 100 asked for) and the warm-up
    trains on the 20 left; the scorer sees only check rows."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"row {i}", "answer": str(i % 3)}) + "\n" for i in range(40)))
    cfg = tiny_base_config(
        tmp_path,
        f"data.tasks=[{{source: jsonl, name: rows, path: {rows}}}]",
        "data.eval_items=10",
        "model.warmup.max_steps=20",
        "model.warmup.check_items=100",
        "model.warmup.check_every=5",
    )
    sources, items = build_tasks(cfg)
    held_out = {item_key(it) for it in items}
    checked: set[str] = set()

    def score(batch, texts):
        checked.update(item.prompt for item in batch)
        return [Score(0.0) for _ in batch]

    log: list[str] = []
    base = ensure_tiny_base(cfg, sources, held_out, score, log.append)
    trained = trained_hashes(base)
    assert len(checked) == 10 and not checked & held_out
    assert not {question_hash(k) for k in checked} & trained
    assert len(trained) == 20  # every other training row, none twice
    assert held_out == {f"row {i}" for i in range(30, 40)}
    assert any(
        "has 30 training questions besides its held-out ones: the warm-up checks competence on 10" in m
        for m in log
    )


def test_a_task_too_small_for_three_disjoint_sets_is_an_error(tmp_path: Path) -> None:
    cfg = tiny_base_config(tmp_path, "data.tasks.0.function=helpers.loop_tasks:six_questions", "data.eval_items=4")
    sources, items = build_tasks(cfg)
    with (
        RewardExecutor(cfg.reward) as executor,
        pytest.raises(
            ConfigError,
            match=r"task 'seven': only 2 training question\(s\) besides its held-out ones, too few for three",
        ),
    ):
        ensure_tiny_base(cfg, sources, {item_key(it) for it in items}, executor.score, print)


def test_the_same_seed_builds_the_same_base_on_another_thread_count(tmp_path: Path) -> None:
    """The same seed and settings give equal weights whatever thread count the caller set (the build pins one
    torch thread and gives the caller's count back)."""
    weights = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        cfg = tiny_base_config(tmp_path / str(threads), "model.warmup.max_steps=6", "model.tiny.hidden_size=32")
        path, _ = build(cfg)
        weights.append(AutoModelForCausalLM.from_pretrained(path).state_dict())
        assert torch.get_num_threads() == threads  # the caller's count is given back
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize(
    ("scripted", "steps", "diverse"),
    [([0.9, 0.6, 0.05, 0.9], 4, True), ([0.05, 0.9], 2, False)],
)
def test_the_warm_up_stops_when_its_samples_stop_differing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scripted: list[float], steps: int, diverse: bool
) -> None:
    """Checks every 2 steps, distinct samples as scripted, floor 0.1: the third check (0.05) goes back to the
    base of the second (step 4); a first check already under the floor stops there, and the base is named."""
    import verity.run.base as base_module

    shares = iter(scripted)
    monkeypatch.setattr(base_module, "sample_diversity", lambda *args, **kwargs: next(shares))
    cfg = tiny_base_config(tmp_path, "model.warmup.max_steps=8")
    path, log = build(cfg)
    info = json.loads((path / "verity_base.json").read_text())
    assert info["warmup_steps"] == steps and info["diverse"] is diverse
    if diverse:
        assert "warm-up: samples stopped differing; keeping the base of step 4" in log
        assert info["distinct_samples"] == 0.6
    else:
        assert any(
            m.startswith("warning: the tiny base samples one answer: distinct samples 0.05 at temperature 1")
            for m in log
        )
        assert base_warnings(path)[0].startswith("the tiny base samples one answer: distinct samples 0.05")
