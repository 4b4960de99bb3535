"""SPARK's third stage as a comparison: RL runs of the same base for the same wall time, each judged afterwards
by the exact checker on the held-out problems.

Arms (``verity spark --arms``):

- ``grpo``: plain GRPO on the exact outcome (the config's reward: 1 when every step and the answer are right).
- ``process_exact``: ``grpo_process`` on the exact step scores (what a perfect PRM would give).
- ``spark``: ``grpo_process`` on the trained PRM's step scores (``prm_judge``, format constraints on): no
  reference answer is read.
- ``prm_outcome``: plain GRPO on the PRM's aggregate (every step judged right), also reference-free.
- ``rm_outcome``: plain GRPO on the outcome reward model's logit (``reward_model``), also reference-free.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from verity.build import build_tasks
from verity.config import Config, load_config
from verity.data.prompts import TaskPrompts
from verity.eval import evaluate
from verity.loop import train
from verity.model.loading import load_tokenizer
from verity.rewards.executor import RewardExecutor
from verity.rollout.engine import EngineSpec
from verity.rollout.registry import build_engine

ARMS = ("grpo", "process_exact", "spark", "prm_outcome", "rm_outcome")


def arm_overrides(
    arm: str, prm_dir: Path, max_marks: int, settings: dict[str, Any] | None = None, orm_dir: Path | None = None
) -> list[str]:
    """The config overrides that make ``arm`` (see the module docstring); ``settings`` go to ``prm_judge``."""
    prm_settings = {"model": str(prm_dir), "max_new_tokens": max_marks, **(settings or {})}
    prm = {"name": "prm_judge", "settings": prm_settings}
    by_arm = {
        "grpo": ["algo.advantage=grpo"],
        "process_exact": ["algo.advantage=grpo_process"],
        "spark": [f"reward.verifiers={json.dumps([prm])}", "algo.advantage=grpo_process"],
        "prm_outcome": [f"reward.verifiers={json.dumps([prm])}", "algo.advantage=grpo"],
        "rm_outcome": [
            f"reward.verifiers={json.dumps([{'name': 'reward_model', 'settings': {'model': str(orm_dir)}}])}",
            "algo.advantage=grpo",
        ],
    }
    if arm == "rm_outcome" and orm_dir is None:
        raise ValueError("--arms rm_outcome needs the outcome reward model: keep --orm-steps above 0")
    if arm not in by_arm:
        raise ValueError(f"--arms: unknown arm {arm!r}; choose from {', '.join(ARMS)}")
    return by_arm[arm]


def exact_accuracy(cfg: Config, model_dir: str) -> float:
    """Greedy held-out accuracy of ``model_dir`` under the config's (exact) reward."""
    _, items = build_tasks(cfg)
    tokenizer = load_tokenizer(model_dir)
    spec = EngineSpec(model_dir, tokenizer, seed=cfg.seed, batch_size=cfg.eval.batch_size, settings=cfg.rollout)
    engine = build_engine(cfg.rollout.engine, spec)
    try:
        with RewardExecutor(cfg.reward.model_copy(update={"in_process": True})) as exact:
            result = evaluate(
                engine,
                partial(TaskPrompts(cfg.data).encode, tokenizer),
                items,
                exact.score,
                max_new_tokens=cfg.rollout.max_new_tokens,
                threshold=cfg.eval.threshold,
            )
    finally:
        engine.close()
    return float(result["accuracy"])


def compare_arms(
    cfg: Config, base: str, prm_dir: Path, orm_dir: Path | None, opts: Any, out: Path, log: Callable[[str], None]
) -> dict:
    """Train each arm from ``base`` for ``opts.rl_seconds`` of RL steps; exact held-out accuracy before and
    after."""
    rows: dict[str, Any] = {"base_accuracy": exact_accuracy(cfg, base), "seconds_per_arm": opts.rl_seconds}
    common = [
        f"model.name={base}",
        f"output_dir={out / 'rl'}",
        "train.steps=100000",
        f"train.time_limit_s={opts.rl_seconds}",
        "train.lr_schedule=constant",
        "eval.every=0",
        "eval.k=1",
        "tracking.quiet=true",
    ]
    for arm in opts.arms:
        overrides = [*common, f"name={arm}", *arm_overrides(arm, prm_dir, 16, opts.prm_settings, orm_dir)]
        arm_cfg = load_config(cfg.model_dump(mode="json"), overrides)
        start = time.time()
        summary = train(arm_cfg, quiet=True)
        rows[arm] = {
            "steps": summary["steps"],
            "wall_s": round(time.time() - start, 1),
            "accuracy": exact_accuracy(cfg, summary["final_model"]),
            "command_overrides": overrides,
        }
        log(f"arm {arm}: {summary['steps']} steps, exact held-out accuracy {rows[arm]['accuracy']:.3f}")
    return rows
