"""A base for scripted engines in tests: everything the Engine protocol names besides ``generate``."""

from __future__ import annotations

from typing import Any

from verity.rollout.engine import Weights
from verity.types import Completion, SamplingParams


class FakeEngine:
    """Keeps a version and a counter as its random state; decodes with ``tokenizer`` when it has one."""

    shared = True  # nothing to verify after a sync

    def __init__(self, tokenizer: Any = None, version: int = 0) -> None:
        self.tokenizer = tokenizer
        self.version = version
        self.rng = 0

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        raise NotImplementedError

    def load_weights(self, weights: Weights, version: int) -> None:
        self.version = version

    def logprobs(
        self, prompts: list[list[int]], completions: list[list[int]], temperature: float
    ) -> list[list[float]]:
        raise NotImplementedError("a scripted engine has no model to score with")

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def get_rng_state(self) -> int:
        return self.rng

    def set_rng_state(self, state: int) -> None:
        self.rng = state

    def close(self) -> None:
        pass
