"""The Runtime seam: where a run's workflow is run and its rollouts scored, and how weights reach the engines.

One protocol; each runtime is registered with what it can do (``verity.runtime.registry``) and built from a
``RuntimeSpec``. A runtime never imports the builder: what it needs arrives in the spec. Every runtime runs every
workflow (``verity.rollout.workflows``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from verity.rollout.engine import Engine, EngineSpec
from verity.rollout.sync_check import Probe
from verity.rollout.workflows.base import Workflow
from verity.types import Item, Rollout, SamplingParams, Score

Supply = Callable[[int], list[tuple[Item, list[int]]]]


class Scoring(Protocol):
    """The reward executor as the loop sees it: scores in this process, and counts of what was scored."""

    def score(self, items: list[Item], completions: list[str]) -> list[Score]: ...

    def stats(self) -> dict[str, float]: ...

    def close(self) -> None: ...


class WeightSource(Protocol):
    """What a sync reads from the learner: its weights, their version, and its log-probs of a sync probe (what an
    engine with its own copy must reproduce)."""

    version: int

    def weights(self) -> Iterator[tuple[str, torch.Tensor]]: ...

    def probe_logprobs(self, probe: Probe) -> list[list[float]]: ...


@dataclass(frozen=True)
class WorkerRestart:
    """A worker that died and was replaced: its kind ('rollout', 'reward'), its rank and what killed it."""

    kind: str
    rank: int
    cause: str


@dataclass
class RuntimeSpec:
    """Everything a runtime is built from. ``engine`` is the driver's (evaluation, and the random state that
    sync-mode rollouts continue); ``workflow`` is the driver's copy of the run's workflow (its plans, its
    cross-item state); ``supply`` draws more items from the run's sampler (the async lead)."""

    cfg: Any  # the run's Config
    model_path: str
    engine: Engine
    engine_spec: EngineSpec  # how the driver's engine was built; a runtime builds its workers' engines alike
    executor: Scoring
    learner: WeightSource
    workflow: Workflow
    supply: Supply


class Runtime(Protocol):
    """Runs the workflow and scores its rollouts, moves weights to the engines; ``timings`` holds the last call's
    phase times (``time/generate``, ``time/score``, ``time/sync``, ...) and the workflow's metrics."""

    executor: Scoring
    timings: dict[str, float]

    def rollout(self, items: list[Item], prompt_ids: list[list[int]], params: SamplingParams) -> list[Rollout]:
        """Scored rollouts of the workflow: ``params.n`` per item, group i for item i."""
        ...

    def sync(self, learner: WeightSource) -> None:
        """Bring every engine to the learner's weights and version."""
        ...

    def restarts(self) -> list[WorkerRestart]:
        """Workers that died and were replaced since the last call (the run summary counts them)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs of the runtime itself (e.g. items drawn but not yet trained on)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...
