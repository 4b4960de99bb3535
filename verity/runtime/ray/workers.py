"""The rollout actor of the Ray runtime, as a plain class (the runtime wraps it with ``ray.remote``).

- ``RolloutWorker``: an engine (any registered backend) on its own copy of the policy, running the run's workflow
  exactly as the local runtime does (``verity.rollout.workflows.runner.run_tasks``); new weights arrive on a
  separate thread (Ray concurrency group ``weights``) while a generation runs, and are adopted at the next safe
  point: before a work unit, or between segments in async mode.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any

import ray
import torch

from verity.model.vision import processor_at
from verity.rewards.executor import RewardExecutor
from verity.rollout.engine import Engine, EngineSpec, Weights
from verity.rollout.registry import build_engine
from verity.rollout.sync_check import SyncCheck, synced
from verity.rollout.workflows.base import Group, Task, WorkflowSpec
from verity.rollout.workflows.registry import resolve_workflow
from verity.rollout.workflows.runner import run_tasks
from verity.types import Completion, Item, SamplingParams, Score


@dataclass
class VersionedCompletion(Completion):
    """A completion whose tokens may come from several policy versions: ``token_versions[i]`` produced
    ``token_ids[i]``; ``version`` is the oldest of them (what staleness admission checks)."""

    token_versions: list[int] = field(default_factory=list)


@dataclass
class RolloutUnit:
    """One work unit for a rollout worker: the workflow's tasks (one group each), from a given RNG state."""

    tasks: list[Task]
    rng_state: torch.Tensor
    segment_tokens: int | None = None


class SegmentedEngine:
    """Interruptible generation over an engine: ``segment`` new tokens at a time; before each further segment,
    ``between_segments`` may adopt new weights, and an unfinished sequence continues from its prompt plus its
    tokens so far (prefilled again under the new weights). Each token keeps the version that sampled it, so the
    behaviour log-probs stay exact per token. The granularity is the segment: tokens within one share a version."""

    def __init__(self, engine: Engine, segment: int, between_segments: Any) -> None:
        self.engine = engine
        self.segment = segment
        self.between_segments = between_segments

    @property
    def version(self) -> int:
        return self.engine.version

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    @property
    def shared(self) -> bool:
        return self.engine.shared

    def close(self) -> None:
        """Release the engine (a vLLM engine's worker processes) before the actor is killed."""
        self.engine.close()

    def load_weights(self, weights: dict[str, Any], version: int) -> None:
        self.engine.load_weights(weights, version)

    def logprobs(
        self, prompts: list[list[int]], completions: list[list[int]], temperature: float
    ) -> list[list[float]]:
        return self.engine.logprobs(prompts, completions, temperature)

    def decode(self, ids: list[int]) -> str:
        return self.engine.decode(ids)

    def get_rng_state(self) -> Any:
        return self.engine.get_rng_state()

    def set_rng_state(self, state: Any) -> None:
        self.engine.set_rng_state(state)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        first = self.engine.generate(
            prompts, replace(params, max_new_tokens=min(self.segment, params.max_new_tokens))
        )
        seqs = [_Sequence(i, c, self.engine.version) for i, group in enumerate(first) for c in group]
        while True:
            open_seqs = [s for s in seqs if s.open(params.max_new_tokens)]
            if not open_seqs:
                break
            self.between_segments()
            budget = min(self.segment, params.max_new_tokens - len(open_seqs[0].tokens))
            step = replace(params, max_new_tokens=budget, n=1)
            outs = self.engine.generate([prompts[s.prompt] + s.tokens for s in open_seqs], step)
            for s, (c,) in zip(open_seqs, outs, strict=True):
                s.extend(c, self.engine.version)
        out: list[list[Completion]] = [[] for _ in prompts]
        for s in seqs:
            out[s.prompt].append(s.completion(self.engine.decode(s.tokens)))
        return out


class _Sequence:
    def __init__(self, prompt: int, first: Completion, version: int) -> None:
        self.prompt = prompt
        self.tokens = list(first.token_ids)
        self.logprobs = list(first.logprobs)
        self.versions = [version] * len(first.token_ids)
        self.finish = first.finish_reason

    def open(self, max_new_tokens: int) -> bool:
        return self.finish == "length" and len(self.tokens) < max_new_tokens

    def extend(self, more: Completion, version: int) -> None:
        self.tokens += more.token_ids
        self.logprobs += more.logprobs
        self.versions += [version] * len(more.token_ids)
        self.finish = more.finish_reason

    def completion(self, text: str) -> VersionedCompletion:
        return VersionedCompletion(
            token_ids=self.tokens,
            logprobs=self.logprobs,
            text=text,
            finish_reason=self.finish,
            version=min(self.versions, default=0),
            token_versions=self.versions,
        )


class RolloutWorker:
    """The engine named ``engine`` on its own copy of the policy, loaded from ``spec.model_path`` (the learner's
    weights follow), and the run's workflow built from ``cfg`` (image items' prompts are encoded here, with the
    model's processor loaded from its path). A workflow that scores as it goes (tree search) scores with this
    actor's own reward executor, built on its first use."""

    def __init__(self, engine: str, spec: EngineSpec, threads: int, cfg: Any) -> None:
        torch.set_num_threads(threads)
        self.engine = build_engine(engine, spec)
        workflow_spec = WorkflowSpec(cfg, spec.tokenizer, processor_at(spec.model_path))
        self.workflow = resolve_workflow(cfg.rollout.workflow)(workflow_spec)
        self.reward_cfg = cfg.reward
        self._executor: RewardExecutor | None = None
        # Weights are applied only while no forward runs: under this lock, and never while ``busy``.
        self._lock = threading.Lock()
        self._pending: tuple[Weights, int, SyncCheck | None] | None = None
        self._busy = False

    @ray.method(concurrency_group="weights")
    def load_weights(self, weights: Weights, version: int, check: SyncCheck | None = None) -> int:
        """Take ``weights`` of ``version``: at once when idle, else at the generation's next safe point. With a
        ``check`` the engine is verified against the learner's log-probs of the probe when it adopts them (a
        ``StaleWeightsError`` then fails the call that adopted them)."""
        with self._lock:
            self._pending = (weights, version, check)
            if not self._busy:
                self._adopt()
        return version

    def _adopt(self) -> None:
        if self._pending is not None:
            weights, version, check = self._pending
            self._pending = None
            synced(self.engine, weights, version, check)

    def _between_segments(self) -> None:
        with self._lock:
            self._adopt()

    def _score(self, items: list[Item], texts: list[str]) -> list[Score]:
        if self._executor is None:
            self._executor = RewardExecutor(self.reward_cfg)
        return self._executor.score(items, texts)

    def generate(self, unit: RolloutUnit) -> tuple[list[Group], torch.Tensor]:
        """The groups of ``unit``'s tasks (scored where the workflow scores them) and the RNG state after
        sampling them."""
        with self._lock:
            self._adopt()
            self._busy = True
        try:
            self.engine.set_rng_state(unit.rng_state)
            engine: Engine = self.engine
            if unit.segment_tokens is not None:  # async: new weights are adopted between segments
                engine = SegmentedEngine(self.engine, unit.segment_tokens, self._between_segments)
            groups = run_tasks(self.workflow, engine, unit.tasks, self._score)
            return groups, self.engine.get_rng_state()
        finally:
            with self._lock:
                self._busy = False

    def version(self) -> int:
        return self.engine.version

    def close(self) -> None:
        """Release the engine (a vLLM engine's worker processes) and the reward executor before the actor is
        killed."""
        self.engine.close()
        if self._executor is not None:
            self._executor.close()
