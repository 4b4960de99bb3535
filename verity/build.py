"""Assembling a run's parts from its config: tasks, model, engine, learner, verifiers, runtime."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from verity.algo.state import AlgoState
from verity.config import Config
from verity.data.prompts import encode_prompt
from verity.data.samplers import MixtureSampler
from verity.data.sources import TaskSource, build_source
from verity.models import BUILTIN, ensure_tiny_base, load_policy
from verity.rewards.executor import RewardExecutor
from verity.rollout.hf import HFEngine
from verity.runtime.local import LocalRuntime
from verity.train.learner import Learner
from verity.types import Item

Log = Callable[[str], None]


@dataclass
class Parts:
    """Everything a run needs, built once."""

    cfg: Config
    model_path: str
    tokenizer: Any
    learner: Learner
    engine: HFEngine
    runtime: LocalRuntime
    sampler: MixtureSampler
    eval_items: list[Item]
    algo_state: AlgoState
    ref_model: nn.Module | None

    def encode(self, item: Item) -> list[int]:
        return encode_prompt(self.tokenizer, item, self.cfg.data.system_prompt)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def build_tasks(cfg: Config) -> tuple[list[TaskSource], list[Item]]:
    """Task sources and the held-out items of every task (the same items for every evaluation)."""
    n_eval = cfg.eval.items or cfg.data.eval_items
    sources = [build_source(task, cfg.seed, n_eval) for task in cfg.data.tasks]
    return sources, [item for source in sources for item in source.eval_items(n_eval)]


def build_parts(cfg: Config, log: Log) -> Parts:
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    seed_everything(cfg.seed)
    sources, eval_items = build_tasks(cfg)
    held_out = {item.prompt for item in eval_items}
    executor = RewardExecutor(cfg.reward)
    model_path = cfg.model.name
    if model_path == BUILTIN:
        model_path = str(ensure_tiny_base(cfg, sources, held_out, executor.score, log))
    device = resolve_device(cfg.runtime.device)
    model, tokenizer = load_policy(model_path, cfg.model.dtype, device)
    seed_everything(cfg.seed)
    ref_model = None
    if cfg.algo.kl_coef > 0 or cfg.algo.kl_target is not None:
        ref_model = copy.deepcopy(model).requires_grad_(False).eval()
    learner = Learner(model, cfg.train, cfg.algo, cfg.rollout.temperature, cfg.seed)
    engine = HFEngine(model, tokenizer, batch_size=cfg.eval.batch_size, seed=cfg.seed)
    sampler = MixtureSampler(sources, [t.weight for t in cfg.data.tasks], held_out, cfg.seed)
    return Parts(
        cfg,
        model_path,
        tokenizer,
        learner,
        engine,
        LocalRuntime(engine, executor),
        sampler,
        eval_items,
        AlgoState(cfg.algo),
        ref_model,
    )
