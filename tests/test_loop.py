"""The RL loop end to end on a tiny policy: GRPO raises the reward of a fixed easy task, the run directory holds
what it promises, verifier faults are scored and counted without stopping the run, and non-finite losses are
skipped with a warning until too many in a row stop the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.loop_tasks import share_of_sevens
from safetensors.torch import load_file

import verity.algo.objective as objective_module
from verity.config import load_config
from verity.eval import EvalConfig
from verity.loop import TrainingStopped, rollout_metrics, train
from verity.schema import ConfigError
from verity.train.batching import collate
from verity.types import Completion, Item, Rollout, Score

pytestmark = pytest.mark.usefixtures("one_thread")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def train_rows(run_dir: Path) -> list[dict]:
    return [row for row in read_jsonl(run_dir / "metrics.jsonl") if "reward/mean" in row]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("learners", [[], ["train.strategy=fsdp2", "train.learners=2"]], ids=["single", "fsdp2"])
def test_grpo_raises_the_reward_of_an_easy_task(make_config, learners: list[str]) -> None:
    """30 GRPO steps take a random policy from ~1% sevens to mostly sevens; a flipped advantage sign or a mask
    that misses the completion tokens leaves the reward near its start. With two fsdp2 learner ranks the engine
    keeps its own copy of the policy, so the rise also shows that every weight sync reached it."""
    cfg = make_config(
        *learners,
        "train.steps=30",
        "train.lr=1e-2",
        "train.checkpoint_every=100",
        "rollout.prompts_per_step=8",
        "rollout.group_size=8",
    )
    summary = train(cfg, quiet=True)
    rewards = [row["reward/mean"] for row in train_rows(cfg.run_dir)]
    assert len(rewards) == 30
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert first < 0.1
    assert last > first + 0.4, f"mean reward {first:.3f} -> {last:.3f}"
    assert summary["eval_before"]["accuracy"] == 0.0
    assert summary["eval_after"]["accuracy"] >= 0.5


def test_run_directory(make_config) -> None:
    cfg = make_config("train.keep_checkpoints=2")
    summary = train(cfg, quiet=True)
    run = cfg.run_dir
    assert summary["status"] == "finished" and summary["steps"] == 3
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    assert load_config(run / "config.yaml") == cfg
    rows = train_rows(run)
    assert [row["step"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert {"reward/std", "grad_norm", "rows_skipped", "lr", "time/step", "throughput/tokens_per_s"} <= set(
            row
        )
        # Loss metrics cover the trained rows: absent only when no row had a nonzero advantage.
        assert "entropy" in row or row["rows_skipped"] == 1.0
        assert row["scored"] == 16 and row["failures"] == 0
    samples = read_jsonl(run / "samples.jsonl")
    assert len(samples) == 3 * 16
    for s in samples:  # the recorded reward is the verifier's value of the recorded completion
        assert s["reward"] == pytest.approx(share_of_sevens(s["completion"]))
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_0000002", "step_0000003"]
    assert (run / "checkpoints" / "latest").read_text() == "step_0000003"
    final = weights(Path(summary["final_model"]))
    state = torch.load(run / "checkpoints" / "step_0000003" / "state.pt", weights_only=False)
    for name, tensor in final.items():
        assert torch.equal(tensor, state["learner"]["model"][name]), name
    assert (Path(summary["final_model"]) / "tokenizer.json").is_file()


def test_a_finished_run_is_not_overwritten_silently(make_config) -> None:
    cfg = make_config("train.steps=1")
    train(cfg, quiet=True)
    with pytest.raises(ConfigError, match="pass --resume"):
        train(cfg, quiet=True)


def test_verifier_faults_score_zero_with_reason_and_are_counted(make_config) -> None:
    """Items i = 0..3 of each step: index 1 raises, index 2 returns a string, 0 and 3 score 0.5."""
    cfg = make_config("reward.verifiers=[helpers.loop_tasks:faulty]", "train.steps=2", "eval.every=1")
    summary = train(cfg, quiet=True)
    assert summary["status"] == "finished"
    rows = train_rows(cfg.run_dir)
    assert len(rows) == 2
    for row in rows:  # 2 of 4 prompts fail, 4 samples each
        assert row["reward/mean"] == pytest.approx(0.25)
        assert (row["scored"], row["failures"]) == (16, 8)
    # the held-out items (indices 0..3, 1 sample each) are scored by evaluations, counted apart from the steps
    assert summary["eval_before"]["verifier/failures"] == 2 and summary["eval_before"]["verifier/scored"] == 4
    reasons = {s["reason"] for s in read_jsonl(cfg.run_dir / "samples.jsonl")}
    assert reasons == {
        None,
        "helpers.loop_tasks:faulty: raised ValueError: verifier bug",
        "helpers.loop_tasks:faulty: returned str 'high', not a finite number",
    }


def nan_on_calls(monkeypatch: pytest.MonkeyPatch, bad_calls: set[int]) -> None:
    """Make the policy loss NaN on the given (1-based) calls. Tests using it train every row
    (``train.skip_zero_advantage=false``), so that every step computes a loss."""
    real = objective_module.policy_loss
    calls = [0]

    def patched(*args, **kwargs):
        calls[0] += 1
        loss, metrics = real(*args, **kwargs)
        return (loss * float("nan") if calls[0] in bad_calls else loss), metrics

    monkeypatch.setattr(objective_module, "policy_loss", patched)


def test_nan_losses_in_a_row_stop_the_run(make_config, tiny_model_dir: Path, monkeypatch) -> None:
    nan_on_calls(monkeypatch, set(range(1, 100)))
    cfg = make_config(
        "train.steps=10", "train.max_bad_steps=3", "train.checkpoint_every=2", "train.skip_zero_advantage=false"
    )
    with pytest.raises(TrainingStopped, match="3 steps in a row had a non-finite loss"):
        train(cfg, quiet=True)
    summary = json.loads((cfg.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["steps"] == 2
    assert summary["warnings"] == [f"step {s}: non-finite loss or gradient, update skipped" for s in (1, 2, 3)]
    # no update was applied: the checkpoint of step 2 holds the initial weights
    state = torch.load(cfg.run_dir / "checkpoints" / "step_0000002" / "state.pt", weights_only=False)
    for name, tensor in weights(tiny_model_dir).items():
        assert torch.equal(tensor, state["learner"]["model"][name]), name


def test_a_single_nan_step_is_skipped_and_the_run_goes_on(make_config, monkeypatch) -> None:
    nan_on_calls(monkeypatch, {1})
    cfg = make_config("train.max_bad_steps=2", "train.skip_zero_advantage=false")
    summary = train(cfg, quiet=True)
    assert summary["status"] == "finished" and summary["steps"] == 3
    assert summary["warnings"] == ["step 1: non-finite loss or gradient, update skipped"]
    assert [row["skipped"] for row in train_rows(cfg.run_dir)] == [1.0, 0.0, 0.0]


@pytest.mark.slow
def test_fsdp2_runs_take_the_kl_to_their_sharded_reference(make_config) -> None:
    """With two learner ranks the reference is a frozen sharded copy in the ranks: before the first update the
    policy equals it (KL 0 up to rounding); once rewards differ and the policy moves, the KL is positive."""
    cfg = make_config(
        "train.strategy=fsdp2",
        "train.learners=2",
        "algo.kl_coef=0.05",
        "train.lr=1e-2",
        "train.steps=4",
        "rollout.prompts_per_step=8",
        "rollout.group_size=8",
    )
    summary = train(cfg, quiet=True)
    assert summary["status"] == "finished"
    rows = train_rows(cfg.run_dir)
    kl = [row["kl"] for row in rows]
    assert abs(kl[0]) < 1e-6 and kl[-1] > 1e-6, kl
    assert rows[0]["rows_skipped"] == 0.0  # a KL term trains every row


def test_time_limit_stops_after_the_step_that_crosses_it(make_config) -> None:
    """A limit shorter than one step: exactly one step runs, then the run checkpoints, evaluates and finishes."""
    cfg = make_config("train.steps=50", "train.time_limit_s=1e-6")
    summary = train(cfg, quiet=True)
    assert (summary["status"], summary["steps"]) == ("finished", 1)
    assert summary["final_model"] and "eval_after" in summary
    assert (cfg.run_dir / "checkpoints" / "latest").read_text() == "step_0000001"


def test_rollout_metrics_hold_the_training_groups_pass_at_k() -> None:
    # Group 0: 2 of 4 correct, pass@2 = 1 - C(2,2)/C(4,2) = 5/6; group 1: 0 of 4; group 2 has too few samples.
    hits = {0: [1, 1, 0, 0], 1: [0, 0, 0, 0], 2: [1]}
    rollouts = [
        Rollout(Item(f"{g}", "t", "p"), g, [1], Completion([2], [0.0], "", "stop"), Score(float(h)))
        for g, group in hits.items()
        for h in group
    ]
    rewards = torch.tensor([r.reward for r in rollouts])
    batch = collate(rollouts, 0)
    metrics = rollout_metrics(rollouts, rewards, torch.ones(9), EvalConfig(k=2), batch)
    assert metrics["pass@2"] == pytest.approx((5 / 6 + 0) / 2)
    assert metrics["accuracy"] == pytest.approx(3 / 9)
    assert "pass@1" not in rollout_metrics(rollouts, rewards, torch.ones(9), EvalConfig(k=1), batch)
