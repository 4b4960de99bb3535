"""Choosing which items a step practises. The sampler's whole state is checkpointed, so a resumed run sees the
same items in the same order."""

from __future__ import annotations

import random
from typing import Any

from verity.data.sources import TaskSource
from verity.types import Item


class MixtureSampler:
    """Draws each prompt's task by weight, then that task's next unseen training item.

    Items whose prompt text is among the held-out prompts are skipped, so evaluation measures items never
    trained on (small procedural families repeat questions across seeds).
    """

    def __init__(self, sources: list[TaskSource], weights: list[float], held_out: set[str], seed: int) -> None:
        if len(sources) != len(weights) or not sources:
            raise ValueError("MixtureSampler needs one weight per source and at least one source")
        self.sources = sources
        self.weights = weights
        self.held_out = held_out
        self._rng = random.Random(seed)
        self._next = [0] * len(sources)
        self.skipped = 0

    def sample(self, n: int) -> list[Item]:
        chosen = self._rng.choices(range(len(self.sources)), weights=self.weights, k=n)
        return [self._next_item(i) for i in chosen]

    def _next_item(self, source_index: int) -> Item:
        source = self.sources[source_index]
        for _ in range(10_000):
            item = source.train_item(self._next[source_index])
            self._next[source_index] += 1
            if item.prompt not in self.held_out:
                return item
            self.skipped += 1
        raise RuntimeError(f"task {source.name!r}: 10000 training items in a row equal held-out items")

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng.getstate(), "next": list(self._next), "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rng.setstate(state["rng"])
        self._next = list(state["next"])
        self.skipped = state["skipped"]
