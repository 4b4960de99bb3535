"""Assembling a run's parts from its config: tasks, model, engine, learner, verifiers, runtime."""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from verity.algo.objective import PolicyObjective, advantage_inputs
from verity.algo.state import AlgoState
from verity.config import Config
from verity.data.images import item_key
from verity.data.prompts import TaskPrompts
from verity.data.samplers import Sampler
from verity.data.sources import TaskSource, build_source
from verity.model.loading import load_policy
from verity.model.lora import apply_lora
from verity.model.modeling import resolve_device
from verity.model.vision import freeze_vision, is_vision_config, model_processor
from verity.rewards.executor import RewardExecutor
from verity.rollout.engine import Engine, EngineSpec
from verity.rollout.registry import build_engine
from verity.rollout.workflows.base import Workflow, WorkflowSpec
from verity.rollout.workflows.registry import resolve_workflow
from verity.run.base import BUILTINS, ensure_tiny_base
from verity.run.held_out import check_held_out
from verity.runtime.base import Runtime, RuntimeSpec
from verity.runtime.registry import build_runtime, place_learners
from verity.step.collect import Augment, Encode
from verity.step.guidance import add_references
from verity.step.rethink import rethink
from verity.train.critic import CriticTrainer, build_critic
from verity.train.fsdp.group import LearnerGroup
from verity.train.fsdp.group_critic import GroupCritic
from verity.train.learner import Learner
from verity.types import Item

Log = Callable[[str], None]


@dataclass
class Parts:
    """Everything a run needs, built once."""

    cfg: Config
    model_path: str
    tokenizer: Any
    learner: Learner | LearnerGroup
    engine: Engine
    runtime: Runtime
    workflow: Workflow  # the driver's copy: plans, cross-item state, held-out episodes
    sampler: Sampler
    eval_items: list[Item]
    encode: Encode  # an item's prompt token ids
    algo_state: AlgoState
    ref_model: nn.Module | None
    critic: CriticTrainer | GroupCritic | None = None
    augment: list[Augment] = field(default_factory=list)  # re-thinking, ViSurf: see collect_rollouts
    processor: Any = None  # a vision-language model's processor (saved with the final model)

    def state_dict(self) -> dict[str, Any]:
        """Everything that changes during training, for checkpoints."""
        return {
            "learner": self.learner.state_dict(),
            "sampler": self.sampler.state_dict(),
            "algo": self.algo_state.state_dict(),
            "engine_generator": self.engine.get_rng_state(),
            "critic": self.critic.state_dict() if self.critic is not None else None,
            "runtime": self.runtime.state_dict(),  # Ray async: items drawn but not yet trained on
            "workflow": self.workflow.state_dict(),  # e.g. tree search's replay buffer
        }

    def close(self) -> None:
        self.runtime.close()
        self.learner.close()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])
        self.sampler.load_state_dict(state["sampler"])
        self.algo_state.load_state_dict(state["algo"])
        self.engine.set_rng_state(state["engine_generator"])
        if self.critic is not None:
            self.critic.load_state_dict(state["critic"])
        self.runtime.sync(self.learner)
        if state.get("runtime"):
            self.runtime.load_state_dict(state["runtime"])
        self.workflow.load_state_dict(state.get("workflow", {}))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_tasks(cfg: Config) -> tuple[list[TaskSource], list[Item]]:
    """Task sources and the held-out items of every task (the same items for every evaluation)."""
    n_eval = cfg.eval.items or cfg.data.eval_items
    sources = [build_source(task, cfg.seed, n_eval) for task in cfg.data.tasks]
    return sources, [item for source in sources for item in source.eval_items(n_eval)]


def held_out_keys(cfg: Config) -> set[str]:
    """The questions ``cfg``'s run holds out (``item_key``s), which neither its training nor its base's warm-up
    may see."""
    return {item_key(item) for item in build_tasks(cfg)[1]}


def tasks_and_base(cfg: Config, score: Callable[..., Any], log: Log) -> tuple[list[TaskSource], list[Item], str]:
    """The task sources, the held-out items and the policy's path, with the tiny base built (or reused) for a
    built-in ``model.name``, and a model that was not trained on the run's held-out questions. Every command that
    needs a base (train, init, spark) goes through here, with the threads ``verity.run.checks.resolve_threads``
    set: one config gives one base whichever command builds it."""
    seed_everything(cfg.seed)
    sources, eval_items = build_tasks(cfg)
    held_out = {item_key(item) for item in eval_items}
    model_path = cfg.model.name
    if model_path in BUILTINS:
        model_path = str(ensure_tiny_base(cfg, sources, held_out, score, log))
    else:
        check_held_out(model_path, held_out)
    return sources, eval_items, model_path


def build_parts(cfg: Config, log: Log) -> Parts:
    """Everything a run needs. When building fails part way (a config error found late, a Ctrl-C), what was
    already started (reward workers, learner ranks, the engine) is closed, so no process outlives the error."""
    with contextlib.ExitStack() as built:
        parts = _build_parts(cfg, log, built)
        built.pop_all()
    return parts


def _build_parts(cfg: Config, log: Log, built: contextlib.ExitStack) -> Parts:
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    executor = RewardExecutor(cfg.reward)
    built.callback(executor.close)
    sources, eval_items, model_path = tasks_and_base(cfg, executor.score, log)
    held_out = {item_key(item) for item in eval_items}
    device = resolve_device(cfg.runtime.device)
    model, tokenizer = load_policy(model_path, cfg.model.dtype, device)
    seed_everything(cfg.seed)
    sharded = cfg.train.strategy == "fsdp2"
    if cfg.model.freeze_vision and is_vision_config(model.config):
        log(f"vision tower frozen ({freeze_vision(model)} parameters)")
    ref_model = None
    if (cfg.algo.kl_coef > 0 or cfg.algo.kl_target is not None) and not sharded:
        ref_model = copy.deepcopy(model).requires_grad_(False).eval()
    if cfg.model.lora is not None:
        # After the reference copy: the reference stays the plain base, which the fresh adapters equal.
        model = apply_lora(model, cfg.model.lora)
    critic: CriticTrainer | GroupCritic | None = None
    if "values" in advantage_inputs(cfg.algo) and not sharded:
        separate = copy.deepcopy(model) if cfg.algo.critic == "separate" else None
        critic = CriticTrainer(
            build_critic(cfg.algo.critic, model, separate).to(device), cfg.algo.critic_lr, cfg.algo.value_clip
        )
    if sharded:
        # The ranks load the policy (and the reference) themselves; the engine keeps its own copy, which weight
        # syncs update. The reference is the group's handle to the copy its ranks hold sharded.
        learner: Learner | LearnerGroup = place_learners(cfg.runtime.kind, cfg, model_path, device)
        built.callback(learner.close)
        ref_model = learner.reference
        if learner.spec.critic:
            critic = GroupCritic(learner)
    else:
        learner = Learner(model, cfg.train, PolicyObjective(cfg.algo), cfg.rollout.temperature, cfg.seed)
    spec = EngineSpec(
        model_path,
        tokenizer,
        cfg.model.dtype,
        device,
        cfg.seed,
        cfg.eval.batch_size,
        cfg.model.lora,
        cfg.rollout,
        model=None if sharded else model,
    )
    engine = build_engine(cfg.rollout.engine, spec)
    built.callback(engine.close)
    sampler = Sampler(
        sources, cfg.data, cfg.rollout.sampling(), held_out=held_out, seed=cfg.seed, threshold=cfg.eval.threshold
    )
    processor = model_processor(model, model_path)
    encode = partial(TaskPrompts(cfg.data, processor).encode, tokenizer)

    def supply(count: int) -> list[tuple[Item, list[int]]]:
        return [(draw.item, encode(draw.item)) for draw in sampler.sample(count)]

    workflow = resolve_workflow(cfg.rollout.workflow)(WorkflowSpec(cfg, tokenizer, processor))
    runtime = build_runtime(
        cfg.runtime.kind, RuntimeSpec(cfg, model_path, engine, spec, executor, learner, workflow, supply)
    )
    return Parts(
        cfg,
        model_path,
        tokenizer,
        learner,
        engine,
        runtime,
        workflow,
        sampler,
        eval_items,
        encode,
        AlgoState(cfg.algo, cfg),
        ref_model,
        critic,
        augmentations(cfg, sampler, tokenizer, learner, runtime.executor.score),
        processor,
    )


def augmentations(
    cfg: Config, sampler: Sampler, tokenizer: Any, learner: Any, score: Callable[..., Any]
) -> list[Augment]:
    """What each round of rollouts goes through before the batch is formed: re-thinking of all-failed groups
    (Cog-Rethinker), then reference solutions joining their groups (ViSurf)."""
    steps: list[Augment] = []
    if cfg.data.rethink.enabled:
        queue = partial(sampler.demos.add, "rethink")
        steps.append(partial(rethink, cfg=cfg.data.rethink, threshold=cfg.eval.threshold, queue=queue))
    if cfg.data.visurf:
        refs = partial(
            add_references, field=cfg.data.reference_field, tokenizer=tokenizer, learner=learner, score=score
        )
        steps.append(lambda rollouts, generate: (refs(rollouts), {}))
    return steps
