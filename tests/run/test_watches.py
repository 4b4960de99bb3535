"""A run that cannot learn says so, with numbers, in its first steps: a small training pool, groups without reward
signal (and why), training reward far above held-out accuracy. The three shaped tasks each give their warning;
settings that can learn give none."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from verity.build import build_tasks
from verity.cli import plot
from verity.cli.report import render_report
from verity.config import load_config
from verity.data.images import item_key
from verity.data.size import estimated_space, pool_warnings, question_pools
from verity.loop import TrainingStopped, train
from verity.run.watches import GapWatch, SignalWatch, group_signal
from verity.types import Completion, Item, Rollout, Score

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[2]


def rollout(group: int, reward: float, tokens: list[int]) -> Rollout:
    item = Item(f"i{group}", "t", "p", "1")
    completion = Completion(tokens, [0.0] * len(tokens), str(tokens), "stop")
    return Rollout(item=item, group=group, prompt_ids=[0], completion=completion, score=Score(reward))


def test_group_signal_counts_flat_groups_and_distinct_samples() -> None:
    rollouts = [
        *(rollout(0, 1.0, [1]) for _ in range(4)),  # all right, one completion
        *(rollout(1, 0.0, [k]) for k in range(4)),  # all wrong, four completions
        *(rollout(2, r, [k]) for k, r in enumerate([1.0, 0.0, 0.0, 0.0])),  # signal
        rollout(3, 1.0, [1]),  # a group of one is no group
    ]
    signal = group_signal(rollouts, threshold=1.0)
    assert signal["signal/flat_groups"] == pytest.approx(2 / 3)
    assert signal["signal/all_right"] == pytest.approx(1 / 3)
    assert signal["signal/all_wrong"] == pytest.approx(1 / 3)
    assert signal["signal/distinct_samples"] == pytest.approx((0 + 1 + 1) / 3)
    assert signal["signal/entropy"] == 0.0  # every sampled token had log-probability 0


@pytest.mark.parametrize(
    ("right", "wrong", "distinct", "cause"),
    [
        (0.9, 0.0, 0.5, "a memorized or too easy training pool (distinct training questions: t: about 10)"),
        (0.4, 0.5, 0.02, "the policy samples deterministically"),
        (0.0, 0.9, 0.8, "the task is too hard for the base"),
    ],
)
def test_signal_watch_warns_once_after_a_window_with_the_cause(
    right: float, wrong: float, distinct: float, cause: str
) -> None:
    watch = SignalWatch({"t": 10, "u": None}, temperature=1.0)
    signal = {
        "signal/flat_groups": right + wrong,
        "signal/all_right": right,
        "signal/all_wrong": wrong,
        "signal/distinct_samples": distinct,
        "signal/entropy": 0.5,
    }
    warnings = [w for step in range(1, 13) for w in watch.observe(step, signal)]
    assert len(warnings) == 1 and warnings[0].startswith("steps 1-10: 90% of groups had all-equal rewards")
    assert cause in warnings[0]


def test_signal_watch_is_quiet_when_groups_carry_signal_and_stops_when_asked() -> None:
    quiet = SignalWatch({}, temperature=1.0)
    varied = {"signal/distinct_samples": 0.9, "signal/entropy": 1.0}
    mixed = {"signal/flat_groups": 0.5, "signal/all_right": 0.2, "signal/all_wrong": 0.3, **varied}
    assert not [w for s in range(50) for w in quiet.observe(s, mixed)]
    stopping = SignalWatch({}, temperature=1.0, stop=True)
    flat = {"signal/flat_groups": 1.0, "signal/all_right": 0.0, "signal/all_wrong": 1.0}
    with pytest.raises(RuntimeError, match=r"stopped: train\.stop_without_signal is set"):
        for s in range(1, 11):
            stopping.observe(s, {**flat, **varied})


def test_gap_watch_needs_a_sustained_gap_beyond_sampling_error() -> None:
    watch = GapWatch(n_items=10)
    watch.observe_eval(0, {"accuracy": 0.2})
    assert not [w for s in range(1, 10) for w in watch.observe_step(s, 0.9)]  # nine steps: not yet sustained
    (warning,) = watch.observe_step(10, 0.9)
    assert warning.startswith(
        "step 10: training accuracy 0.90 (mean of steps 1-10) against held-out accuracy 0.20"
    )
    close = GapWatch(n_items=10)
    close.observe_eval(0, {"accuracy": 0.5})
    assert not [w for s in range(1, 30) for w in close.observe_step(s, 0.7)]


def test_estimated_space_recovers_a_small_question_space() -> None:
    assert estimated_space(1000, 20) == 20
    assert estimated_space(1000, 1000) is None
    assert 90 <= estimated_space(1000, 100) <= 110


def test_quickstart_pool_is_large_enough() -> None:
    """chain_sum with three one-digit terms has about 4,000 questions against 600 x 16 draws: no warning."""
    cfg = load_config(REPO / "examples" / "quickstart.yaml", [])
    sources, items = build_tasks(cfg)
    pools = question_pools(sources, {item_key(it) for it in items})
    assert pools["chain_sum"] is not None and pools["chain_sum"] > 2000
    assert pool_warnings(cfg, pools) == []


def shaped(make_config, *overrides: str):
    return make_config("train.steps=12", "train.checkpoint_every=100", "tracking.samples_every=0", *overrides)


def test_twenty_questions_whose_held_out_half_is_unreachable(make_config, capsys, monkeypatch) -> None:
    """Held out q0..q9, trained on q10..q19, every training answer right and no held-out one: the pool, the
    groups without signal and the train/held-out gap are each reported with their numbers, in summary.json, on
    the console and in the report."""
    cfg = shaped(
        make_config,
        "data.tasks.0.function=helpers.loop_tasks:twenty_questions",
        "data.eval_items=10",
        "reward.verifiers=[helpers.loop_tasks:training_half_right]",
        "rollout.prompts_per_step=10",
        "tracking.quiet=false",
    )
    summary = train(cfg)
    warnings = summary["warnings"]
    assert (
        "task 'seven' has about 10 distinct training questions left after its held-out ones, and the run draws "
        "120 training prompts from it (train.steps=12 x rollout.prompts_per_step=10): about 12 times each"
    ) in "\n".join(warnings)
    assert any(
        w.startswith("steps 1-10: 100% of groups had all-equal rewards (100% all right, 0% all wrong")
        and "a memorized or too easy training pool (distinct training questions: seven: about 10)" in w
        for w in warnings
    )
    assert any(
        w.startswith("step 10: training accuracy 1.00 (mean of steps 1-10) against held-out accuracy 0.00")
        for w in warnings
    )
    saved = json.loads((cfg.run_dir / "summary.json").read_text())
    assert saved["warnings"] == warnings and len(warnings) == 3
    shown = capsys.readouterr().err
    monkeypatch.setattr(plot, "build_figures", lambda runs: [])
    page = render_report(cfg.run_dir)
    for warning in warnings:
        assert f"warning: {warning}" in shown
        assert html.escape(warning) in page


def test_a_base_answering_one_answer_with_probability_one(
    make_config, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The tiny policy's logits scaled a thousandfold: every sample is its greedy completion."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.model.norm.weight.mul_(1000.0)
    sure = tmp_path / "sure"
    model.save_pretrained(sure)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_model_dir / name).is_file():
            (sure / name).write_bytes((tiny_model_dir / name).read_bytes())
    summary = train(shaped(make_config, f"model.name={sure}"), quiet=True)
    (warning,) = [w for w in summary["warnings"] if "all-equal rewards" in w]
    assert warning.startswith("steps 1-10: 100% of groups had all-equal rewards")
    assert re.search(r"distinct samples 0\.0\d, sampling entropy 0\.0\d", warning), warning
    assert "the policy samples deterministically" in warning
    assert "rollout.temperature=1" in warning


def test_a_task_no_warm_up_can_learn(make_config, tmp_path: Path) -> None:
    """Eight random digits per prompt: the built base is no better than the majority answer and every group is
    all wrong; the run stops when train.stop_without_signal asks it to."""
    tiny = (
        "model.tiny={vocab_size: 300, hidden_size: 16, num_layers: 1, num_heads: 2, intermediate_size: 32}",
        "model.warmup={max_steps: 4, batch_size: 4, check_every: 2, check_items: 4}",
    )
    cfg = shaped(
        make_config,
        "model.name=tiny",
        f"model.cache_dir={tmp_path / 'cache'}",
        *tiny,
        "data.tasks.0.function=helpers.loop_tasks:unlearnable",
        "reward.verifiers=[exact_match]",
        "train.stop_without_signal=true",
    )
    with pytest.raises(TrainingStopped, match=r"steps 1-10: 100% of groups had all-equal rewards \(0% all right"):
        train(cfg, quiet=True)
    summary = json.loads((cfg.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "the task is too hard for the base" in summary["error"]
    assert any(
        "no better than always giving the most frequent answer (check accuracy 0.00" in w
        for w in summary["warnings"]
    )


def test_the_say_seven_run_that_learns_gives_none_of_these_warnings(make_config) -> None:
    cfg = make_config("train.steps=12", "rollout.prompts_per_step=8", "rollout.group_size=8", "train.lr=1e-2")
    summary = train(cfg, quiet=True)
    assert not [w for w in summary["warnings"] if "all-equal" in w or "held-out accuracy" in w or "draws" in w]


@pytest.mark.slow
def test_the_quickstarts_first_50_steps_give_none_of_these_warnings(tmp_path: Path) -> None:
    """The quickstart as shipped (its base built or reused from the cache), 50 steps with two held-out checks."""
    overrides = ["train.steps=50", "eval.every=25", f"output_dir={tmp_path}"]
    summary = train(load_config(REPO / "examples" / "quickstart.yaml", overrides), quiet=True)
    assert summary["status"] == "finished" and summary["warnings"] == []


def test_a_tables_pool_is_its_distinct_training_rows(tmp_path: Path) -> None:
    """40 rows, the last 10 held out, the first 30 asking 15 questions twice: 15 training questions exactly, which
    12 steps x 20 prompts draw 16 times each (a warning)."""
    rows = tmp_path / "rows.jsonl"
    lines = [{"prompt": f"row {i % 15 if i < 30 else i}", "answer": "1"} for i in range(40)]
    rows.write_text("".join(json.dumps(r) + "\n" for r in lines))
    settings = {"data": {"tasks": [{"source": "jsonl", "name": "rows", "path": str(rows)}], "eval_items": 10}}
    cfg = load_config(settings, ["train.steps=12", "rollout.prompts_per_step=20"])
    sources, items = build_tasks(cfg)
    pools = question_pools(sources, {item_key(it) for it in items})
    assert pools == {"rows": 15}
    (warning,) = pool_warnings(cfg, pools)
    assert "task 'rows' has about 15 distinct training questions" in warning
    demand = "draws 240 training prompts from it (train.steps=12 x rollout.prompts_per_step=20): about 16 times"
    assert demand in warning
