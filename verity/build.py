"""Assembling a run's parts from its config: tasks, model, engine, learner, verifiers, runtime."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from verity.algo.state import AlgoState
from verity.config import Config
from verity.data.collect import collect_rollouts
from verity.data.guidance import add_references, relift_update
from verity.data.prompts import TaskPrompts
from verity.data.samplers import Sampler
from verity.data.sources import TaskSource, build_source
from verity.envs.setup import build_episode_runner
from verity.models import BUILTIN, ensure_tiny_base, load_policy
from verity.rewards.executor import RewardExecutor
from verity.rollout.engine import Engine, EngineSpec, SamplingParams
from verity.rollout.registry import build_engine
from verity.runtime.local import LocalRuntime
from verity.train.critic import CriticTrainer, build_critic
from verity.train.learner import Learner
from verity.train.lora import apply_lora
from verity.types import Item, Rollout

if TYPE_CHECKING:
    from verity.runtime.ray import RayRuntime

Log = Callable[[str], None]


@dataclass
class Parts:
    """Everything a run needs, built once."""

    cfg: Config
    model_path: str
    tokenizer: Any
    learner: Learner
    engine: Engine
    runtime: LocalRuntime | RayRuntime
    sampler: Sampler
    eval_items: list[Item]
    algo_state: AlgoState
    ref_model: nn.Module | None
    critic: CriticTrainer | None = None

    @cached_property
    def prompts(self) -> TaskPrompts:
        return TaskPrompts(self.cfg.data)

    def state_dict(self) -> dict[str, Any]:
        """Everything that changes during training, for checkpoints."""
        return {
            "learner": self.learner.state_dict(),
            "sampler": self.sampler.state_dict(),
            "algo": self.algo_state.state_dict(),
            "engine_generator": self.engine.get_rng_state(),
            "critic": self.critic.state_dict() if self.critic is not None else None,
            # Ray async: items drawn but not yet trained on.
            "runtime": self.runtime.state_dict() if self.cfg.runtime.kind == "ray" else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])
        self.sampler.load_state_dict(state["sampler"])
        self.algo_state.load_state_dict(state["algo"])
        self.engine.set_rng_state(state["engine_generator"])
        if self.critic is not None:
            self.critic.load_state_dict(state["critic"])
        self.runtime.sync(self.learner)
        if state.get("runtime") is not None:
            self.runtime.load_state_dict(state["runtime"])

    def encode(self, item: Item) -> list[int]:
        return self.prompts.encode(self.tokenizer, item)

    def collect(self) -> tuple[list[Rollout], dict[str, float]]:
        """This step's scored rollouts (sampler, stages, dynamic sampling, ViSurf) and the data metrics."""
        r, data = self.cfg.rollout, self.cfg.data
        params = SamplingParams(r.max_new_tokens, r.temperature, r.top_p, n=r.group_size)
        refs = None
        if data.visurf:
            score = self.runtime.executor.score
            refs = partial(
                add_references,
                field=data.reference_field,
                tokenizer=self.tokenizer,
                learner=self.learner,
                score=score,
            )
        return collect_rollouts(self.sampler, self.runtime, self.encode, params, r.prompts_per_step, refs)

    def relift(self) -> dict[str, float]:
        """ReLIFT's interleaved SFT step, when the sampler says one is due."""
        items = self.sampler.demonstrations()
        if not items:
            return {}
        data = self.cfg.data
        return relift_update(
            self.learner, self.tokenizer, self.encode, items, data.reference_field, data.relift.lr_scale
        )


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
    if cfg.model.lora is not None:
        # After the reference copy: the reference stays the plain base, which the fresh adapters equal.
        model = apply_lora(model, cfg.model.lora)
    critic = None
    if cfg.algo.advantage == "gae":
        separate = copy.deepcopy(model) if cfg.algo.critic == "separate" else None
        critic = CriticTrainer(
            build_critic(cfg.algo.critic, model, separate).to(device), cfg.algo.critic_lr, cfg.algo.value_clip
        )
    learner = Learner(model, cfg.train, cfg.algo, cfg.rollout.temperature, cfg.seed)
    engine = build_engine(
        cfg.rollout.engine,
        EngineSpec(
            model_path,
            tokenizer,
            cfg.model.dtype,
            device,
            cfg.seed,
            cfg.eval.batch_size,
            cfg.model.lora,
            cfg.rollout,
            model=model,
        ),
    )
    sampler = Sampler(
        sources,
        cfg.data,
        group_size=cfg.rollout.group_size,
        max_new_tokens=cfg.rollout.max_new_tokens,
        held_out=held_out,
        seed=cfg.seed,
        threshold=cfg.eval.threshold,
    )
    parts = Parts(
        cfg,
        model_path,
        tokenizer,
        learner,
        engine,
        LocalRuntime(engine, executor, build_episode_runner(cfg, engine, tokenizer)),
        sampler,
        eval_items,
        AlgoState(cfg.algo),
        ref_model,
        critic,
    )
    if cfg.runtime.kind == "ray":
        # Imported only here: Ray takes seconds to import and local runs never need it.
        from verity.runtime.ray import use_ray_runtime

        use_ray_runtime(parts)
    return parts
