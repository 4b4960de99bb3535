"""Every algorithm option through the real loop, each shown to act: two RL steps on a tiny model with the option,
against the same two steps without it (same seed, same data), asserting the option's own effect: the metric only
it logs, or a trained model that differs from the run without it. An option the loop silently ignored would end
at exactly the baseline's weights and fail. Every run also finishes with finite losses and no warning from
Verity's code."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import loop_settings
from safetensors.torch import load_file

from verity.config import load_config
from verity.loop import train
from verity.train.checkpoint import latest_checkpoint, load_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

DISTINCT = "reward.verifiers=[helpers.loop_tasks:distinct_characters]"  # differs between almost any two samples
SEVENS = "reward.verifiers=[helpers.loop_tasks:share_of_sevens]"  # few values: equal rewards within groups
# Completions of different lengths (the model says one to six 7s), where the aggregations part.
VARIED = ("rollout.max_new_tokens=8", SEVENS)
# Two updates per batch at a large learning rate: the second sees a ratio away from 1, where the clips act.
MOVING_RATIO = ("train.epochs=2", "train.lr=0.05")
Rows = list[dict[str, Any]]
_NAMES: list[tuple[str, ...]] = []


@cache
def _run(
    root: Path, model_dir: Path, overrides: tuple[str, ...]
) -> tuple[Rows, dict[str, torch.Tensor], dict, list]:
    """Two steps with ``overrides`` (each distinct run once per session): the step rows, the final weights, the
    last checkpoint and the run's warnings."""
    settings = ["train.steps=2", "train.checkpoint_every=1", f"name=run{len(_NAMES)}", *overrides]
    _NAMES.append(overrides)
    cfg = load_config(loop_settings(model_dir, root), settings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train(cfg)
    ours = [str(w.message) for w in caught if "/verity/" in w.filename.replace("\\", "/")]
    assert not ours and summary["status"] == "finished", ours
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss/policy" in r]
    assert len(steps) == 2 and all(r["skipped"] == 0 and math.isfinite(r["loss/total"]) for r in steps)
    weights = load_file(Path(summary["final_model"]) / "model.safetensors")
    return steps, weights, load_checkpoint(latest_checkpoint(cfg.run_dir / "checkpoints")), summary["warnings"]


def differs(option: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(option[k], base[k]) for k in base)


# option -> (overrides of the run with it, overrides of the run without it, its own effect)
Check = Callable[[Rows, dict[str, torch.Tensor], dict, Rows, dict[str, torch.Tensor]], bool]
MOVES: Check = lambda rows, w, state, base_rows, base_w: differs(w, base_w)  # noqa: E731


def logs(key: str, test: Callable[[float], bool]) -> Check:
    return lambda rows, w, state, base_rows, base_w: (
        all(key in r and test(r[key]) for r in rows) and all(key not in r for r in base_rows)
    )


OPTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...], Check]] = {
    "dr_grpo": (("algo.advantage=dr_grpo", "algo.aggregation=constant", "algo.constant_normalizer=4"), (), MOVES),
    "rloo": (("algo.advantage=rloo",), (), MOVES),
    "reinforce_pp": (("algo.advantage=reinforce_pp",), (), MOVES),
    "reinforce_pp_baseline": (("algo.advantage=reinforce_pp_baseline",), (), MOVES),
    "gae_policy_critic": (("algo.advantage=gae", "algo.critic=policy"), (), logs("critic/loss", math.isfinite)),
    "gae_separate_critic": (
        ("algo.advantage=gae", "algo.critic=separate"),
        (),
        logs("critic/loss", math.isfinite),
    ),
    "gae_discount_and_lambda": (
        ("algo.advantage=gae", "algo.gamma=0.9", "algo.gae_lambda=0.5"),
        ("algo.advantage=gae",),
        MOVES,
    ),
    "task_norm_grpo": (("algo.advantage=task_norm_grpo",), (), MOVES),
    "pass_k": (
        ("algo.advantage=pass_k", "algo.pass_k=2", "algo.correct_threshold=0.9"),
        (),
        lambda rows, w, state, base_rows, base_w: (
            differs(w, base_w) and [r["algo/pass_k"] for r in rows] == [2, 2]
        ),
    ),
    "positive_scale": (("algo.positive_scale=0.1",), (), MOVES),
    "w_reinforce": (("algo.advantage=w_reinforce", "algo.w_reinforce_lambda=0.1"), (), MOVES),
    "single_rollout": (  # one sample per prompt, and its running baseline saw 2 steps x 4 rewards
        ("algo.advantage=single_rollout", "rollout.group_size=1"),
        (),
        lambda rows, w, state, base_rows, base_w: state["algo"]["estimator"]["count"] == 8,
    ),
    "trloo_single_turn": (("algo.advantage=trloo",), (), MOVES),
    "clip_higher": (("algo.clip_high=0.6", *MOVING_RATIO), MOVING_RATIO, MOVES),
    "dual_clip": (("algo.dual_clip=1.01", *MOVING_RATIO), MOVING_RATIO, MOVES),
    "gspo": (("algo.loss=gspo", "algo.clip_low=3e-4", "algo.clip_high=4e-4"), (), MOVES),
    "decoupled_ppo": (("algo.loss=decoupled_ppo",), (), logs("is_weight/mean", lambda v: abs(v - 1) < 1e-3)),
    "tis": (("algo.tis_cap=2.0",), (), logs("is_weight/mean", lambda v: abs(v - 1) < 1e-3)),
    "safe_ratio": (("algo.log_ratio_clamp=0.001", *MOVING_RATIO), MOVING_RATIO, MOVES),
    "seq_mean_token_mean": (("algo.aggregation=seq_mean_token_mean", *VARIED), VARIED, MOVES),
    "seq_mean_token_sum": (("algo.aggregation=seq_mean_token_sum", *VARIED), VARIED, MOVES),
    "kl_k1_loss": (("algo.kl_coef=0.1", "algo.kl_estimator=k1"), (), logs("loss/kl", math.isfinite)),
    "kl_k2_loss": (("algo.kl_coef=0.1", "algo.kl_estimator=k2"), (), logs("loss/kl", lambda v: v >= 0)),
    "kl_k3_reward": (
        ("algo.kl_coef=0.5", "algo.kl_in=reward", "train.lr=0.05"),
        ("algo.kl_coef=0.5", "train.lr=0.05"),  # the same KL in the loss
        lambda rows, w, state, base_rows, base_w: differs(w, base_w) and all("loss/kl" not in r for r in rows),
    ),
    "kl_adaptive": (
        ("algo.kl_coef=0.05", "algo.kl_target=0.01", "train.lr=0.05"),
        ("algo.kl_coef=0.05", "train.lr=0.05"),
        lambda rows, w, state, base_rows, base_w: (
            rows[-1]["algo/kl_coef"] != 0.05 and base_rows[-1]["algo/kl_coef"] == 0.05
        ),
    ),
    "entropy_bonus": (("algo.entropy_coef=0.01",), (), logs("loss/entropy", lambda v: v < 0)),
    "entropy_control_coef": (  # entropy far below the band: the controller raises the bonus from 0
        ("algo.entropy_target_low=50", "algo.entropy_target_high=60"),
        (),
        lambda rows, w, state, base_rows, base_w: (
            rows[0]["algo/entropy_coef"] > 0 and base_rows[0]["algo/entropy_coef"] == 0
        ),
    ),
    "entropy_control_mask": (  # entropy above the band: negative-advantage tokens are dropped
        ("algo.entropy_target_low=0.001", "algo.entropy_target_high=0.002", "algo.entropy_control=mask"),
        (),
        lambda rows, w, state, base_rows, base_w: differs(w, base_w) and rows[-1]["algo/negative_weight"] == 0.0,
    ),
    "outliers": (("algo.adv_outlier_sigma=0.5",), (), MOVES),
    "rareness": (("algo.rareness_alpha=0.5", SEVENS), (SEVENS,), MOVES),
    "overlong": (
        ("algo.overlong_max_len=4", "algo.overlong_buffer=2"),
        (),
        logs("shaping/overlong", lambda v: v < 0),
    ),
    "long2short": (
        ("algo.long2short_coef=0.5", "algo.correct_threshold=0.5"),
        (),
        logs("shaping/long2short", math.isfinite),
    ),
    "repetition": (
        ("algo.repetition_coef=0.1", "algo.repetition_ngram=1", *VARIED),
        VARIED,
        logs("shaping/repetition", lambda v: v < 0),
    ),
}


@pytest.mark.parametrize("name", OPTIONS)
def test_option_acts_through_the_loop(name: str, tiny_model_dir: Path, tmp_path_factory) -> None:
    with_it, without_it, effect = OPTIONS[name]
    root = tmp_path_factory.getbasetemp() / "options"
    rows, weights, state, warned = _run(root, tiny_model_dir, (DISTINCT, *with_it))
    base_rows, base_weights, _, _ = _run(root, tiny_model_dir, (DISTINCT, *without_it))
    assert warned == []
    assert differs(weights, load_file(tiny_model_dir / "model.safetensors")), "no parameter changed"
    assert effect(rows, weights, state, base_rows, base_weights), f"{name} left no trace of its own"


def test_the_pass_at_k_guard_runs_in_the_loop_and_is_checkpointed(tiny_model_dir: Path, tmp_path: Path) -> None:
    guard = ("algo.advantage=pass_k", "algo.pass_k=1", "algo.pass_k_guard=0.05", "eval.k=2")
    rows, _, state, _ = _run(tmp_path, tiny_model_dir, (DISTINCT, "algo.correct_threshold=0.9", *guard))
    assert [r["algo/pass_k"] for r in rows] == [1.0, 1.0]  # too early to react (patience)
    assert all(0.0 <= r["pass@2"] <= 1.0 for r in rows)
    assert state["step"] == 2 and state["algo"]["estimator"]["k"] == 1
    assert state["algo"]["estimator"]["since_change"] == 2 and state["algo"]["steps"] == 2
