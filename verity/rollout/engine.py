"""The Engine seam: turn prompts into sampled completions with behaviour log-probs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from verity.types import Completion


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy decoding (log-probs then use temperature 1)."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class Engine(Protocol):
    """Generates completions; knows which policy version produced them."""

    version: int

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        """``params.n`` completions for each prompt (token ids, no padding), in prompt order."""
        ...

    def load_weights(self, weights: dict[str, Any], version: int) -> None:
        """Adopt new policy weights; later completions carry ``version``."""
        ...
