"""Every algorithm option through the real loop: two RL steps on a tiny model, with a finite loss, no skipped
update, parameters that move, and no warning raised from Verity's code or recorded in the run."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from verity.loop import train
from verity.train.checkpoint import latest_checkpoint, load_checkpoint

OPTIONS = {
    "grpo": [],
    "dr_grpo": ["algo.advantage=dr_grpo", "algo.aggregation=constant", "algo.constant_normalizer=4"],
    "rloo": ["algo.advantage=rloo"],
    "reinforce_pp": ["algo.advantage=reinforce_pp"],
    "reinforce_pp_baseline": ["algo.advantage=reinforce_pp_baseline"],
    "gae_policy_critic": ["algo.advantage=gae", "algo.critic=policy"],
    "gae_separate_critic": [
        "algo.advantage=gae",
        "algo.critic=separate",
        "algo.gamma=0.99",
        "algo.gae_lambda=0.95",
    ],
    "task_norm_grpo": ["algo.advantage=task_norm_grpo"],
    "pass_k": ["algo.advantage=pass_k", "algo.pass_k=2", "algo.correct_threshold=0.9"],
    "w_reinforce": ["algo.positive_weight=0.1"],
    "single_rollout": ["algo.advantage=single_rollout", "rollout.group_size=1", "algo.entropy_adv_alpha=0.1"],
    "trloo_single_turn": ["algo.advantage=trloo"],
    "clip_higher": ["algo.clip_high=0.28"],
    "dual_clip": ["algo.dual_clip=3.0"],
    "gspo": ["algo.loss=gspo", "algo.clip_low=3e-4", "algo.clip_high=4e-4"],
    "decoupled_ppo": ["algo.loss=decoupled_ppo"],
    "tis": ["algo.tis_cap=2.0"],
    "safe_ratio": ["algo.log_ratio_clamp=5.0"],
    "seq_mean_token_mean": ["algo.aggregation=seq_mean_token_mean"],
    "seq_mean_token_sum": ["algo.aggregation=seq_mean_token_sum"],
    "kl_k1_loss": ["algo.kl_coef=0.1", "algo.kl_estimator=k1"],
    "kl_k2_loss": ["algo.kl_coef=0.1", "algo.kl_estimator=k2"],
    "kl_k3_reward": ["algo.kl_coef=0.1", "algo.kl_in=reward"],
    "kl_adaptive": ["algo.kl_coef=0.05", "algo.kl_target=0.01"],
    "entropy_bonus": ["algo.entropy_coef=0.01"],
    "entropy_control_coef": ["algo.entropy_target_low=0.5", "algo.entropy_target_high=2.0"],
    "entropy_control_mask": [
        "algo.entropy_target_low=0.5",
        "algo.entropy_target_high=2.0",
        "algo.entropy_control=mask",
    ],
    "outliers_and_rareness": ["algo.adv_outlier_sigma=3.0", "algo.rareness_alpha=0.5"],
    "shapers": [
        "algo.overlong_max_len=4",
        "algo.overlong_buffer=2",
        "algo.long2short_coef=0.1",
        "algo.repetition_coef=0.1",
        "algo.repetition_ngram=2",
    ],
}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("overrides", OPTIONS.values(), ids=OPTIONS.keys())
def test_option_trains_through_the_loop(overrides, make_config, tiny_model_dir, one_thread) -> None:
    # A reward that differs between samples, so every option gets a non-zero advantage to act on.
    reward = "reward.verifiers=[helpers.loop_tasks:distinct_characters]"
    cfg = make_config("train.steps=2", "train.checkpoint_every=2", reward, *overrides)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train(cfg)
    ours = [w for w in caught if "/verity/" in w.filename.replace("\\", "/")]
    assert not ours, [str(w.message) for w in ours]
    assert summary["status"] == "finished" and summary["warnings"] == []

    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss/policy" in r]
    assert len(steps) == 2
    for row in steps:
        assert row["skipped"] == 0
        assert math.isfinite(row["loss/policy"]) and math.isfinite(row["grad_norm"])

    before, after = _weights(tiny_model_dir), _weights(Path(summary["final_model"]))
    moved = [name for name in before if not torch.equal(before[name], after[name])]
    assert moved, "no parameter changed"


@pytest.mark.slow
def test_the_pass_at_k_guard_runs_in_the_loop_and_is_checkpointed(make_config, one_thread) -> None:
    reward = "reward.verifiers=[helpers.loop_tasks:distinct_characters]"
    guard = ["algo.advantage=pass_k", "algo.pass_k=1", "algo.pass_k_guard=0.05", "eval.k=2"]
    cfg = make_config("train.steps=2", "train.checkpoint_every=1", reward, "algo.correct_threshold=0.9", *guard)
    train(cfg)
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss/policy" in r]
    assert [r["algo/pass_k"] for r in steps] == [1.0, 1.0]  # too early to react (patience)
    assert all(0.0 <= r["pass@2"] <= 1.0 for r in steps)
    state = load_checkpoint(latest_checkpoint(cfg.run_dir / "checkpoints"))
    assert (
        state["step"] == 2 and state["algo"]["pass_k"]["k"] == 1 and state["algo"]["pass_k"]["since_change"] == 2
    )
