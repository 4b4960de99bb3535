"""The Engine seam: turn prompts (token ids) into sampled completions (token ids) with behaviour log-probs.

A backend is one file that implements ``Engine`` and marks its factory ``@register_engine("name")`` over
``def build(spec: EngineSpec) -> Engine`` (``verity/rollout/registry.py`` lists the built-in files). Configs pick
it with ``rollout.engine`` (a registered name or a user's ``package.module:factory``). Callers use nothing but
what the protocol names. A factory may carry ``default_tis_cap``: the ``algo.tis_cap`` a run with that engine gets
unless its config sets one (an engine whose log-probs come from other kernels than the learner's).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from verity.registry import registered_as
from verity.types import Completion, SamplingParams

Weights = Iterable[tuple[str, torch.Tensor]]
ENGINE = "rollout engine"  # the registry's kind


def register_engine(name: str) -> Any:
    """Decorator marking an engine factory ``(EngineSpec) -> Engine`` as the built-in backend ``name``."""
    return registered_as(ENGINE, name)


@dataclass(frozen=True)
class EngineSpec:
    """What an engine factory gets. ``model`` is the learner's own module when the engine may share it (the
    local runtime, where a weight sync is then free); an engine that keeps its own copy loads ``model_path``.
    ``settings`` is the run's ``rollout:`` section (``RolloutConfig``): a backend reads its own subsection
    (``rollout.vllm``), a user's backend ``rollout.engine_settings``; None gives a backend its defaults."""

    model_path: str
    tokenizer: Any
    dtype: str = "auto"
    device: str = "cpu"
    seed: int = 0
    batch_size: int = 64
    lora: Any = None  # a LoraConfig when the learner trains adapters; weight syncs then carry adapters only
    settings: Any = None
    model: torch.nn.Module | None = None


class Engine(Protocol):
    """Generates completions and knows which policy version produced them."""

    version: int
    tokenizer: Any
    shared: bool  # runs on the learner's own module: a sync moves only the version, and there is nothing to verify

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        """``params.n`` completions for each prompt (token ids, no padding), in prompt order."""
        ...

    def load_weights(self, weights: Weights, version: int) -> None:
        """Adopt new policy weights (``(name, tensor)`` pairs, the learner's parameter names, streamed: read them
        once); later completions carry ``version``. An engine sharing the learner's module takes the version only
        and never reads ``weights``."""
        ...

    def logprobs(
        self, prompts: list[list[int]], completions: list[list[int]], temperature: float
    ) -> list[list[float]]:
        """Teacher-forced log-probs of each completion's tokens after its prompt, under ``logits / temperature``:
        what a weight sync is verified with."""
        ...

    def decode(self, token_ids: list[int]) -> str:
        """Text of ``token_ids``, special tokens skipped."""
        ...

    def get_rng_state(self) -> Any:
        """The sampler's random state (checkpointed; handed between Ray workers so splits sample the same)."""
        ...

    def set_rng_state(self, state: Any) -> None: ...

    def close(self) -> None:
        """Release what the engine holds (worker processes, device memory)."""
        ...
