"""The Runtime seam: where rollouts are generated and scored, and how weights reach the engines.

One protocol, built by one factory (``verity.runtime.factory.build_runtime``) from a ``RuntimeSpec``. A runtime
never imports the builder: what it needs arrives in the spec.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from verity.rollout.engine import Engine, EngineSpec, SamplingParams
from verity.rollout.episode import EpisodeRunner
from verity.rollout.sync_check import Probe
from verity.types import Item, Rollout, Score

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


@dataclass
class RuntimeSpec:
    """Everything a runtime is built from. ``engine`` is the driver's (evaluation, and the random state that
    sync-mode rollouts continue); ``supply`` draws more items from the run's sampler (the async lead)."""

    cfg: Any  # the run's Config
    model_path: str
    engine: Engine
    engine_spec: EngineSpec  # how the driver's engine was built; a runtime builds its workers' engines alike
    executor: Scoring
    learner: WeightSource
    episodes: EpisodeRunner | None
    supply: Supply


class Runtime(Protocol):
    """Generates and scores rollouts, moves weights to the engines; ``timings`` holds the last call's phase times
    (``time/generate``, ``time/score``, ``time/sync``, ...)."""

    executor: Scoring
    episodes: EpisodeRunner | None
    timings: dict[str, float]

    def rollout(self, items: list[Item], prompt_ids: list[list[int]], params: SamplingParams) -> list[Rollout]:
        """Scored rollouts: ``params.n`` per item, group i for item i."""
        ...

    def sync(self, learner: WeightSource) -> None:
        """Bring every engine to the learner's weights and version."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs (e.g. items drawn but not yet trained on)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...
