"""DeepSearch's replay buffer with cached solutions (Wu et al. 2025, arXiv:2509.25454, Section 4.2), online.

The paper works in phases: after each, problems the tree search solved but the policy still passes less than
``delta`` of the time get their correct trajectory cached, and a cached problem is then trained on its cached
solution plus a few direct rollouts instead of a new tree (Eq. 11). Our reading for a loop without phases, keyed
by problem (task and prompt text, since an endless item stream rarely repeats an item id):

- admit: a tree that found a correct path while its share of correct paths stayed below ``threshold`` caches
  one correct path (the most confident: lowest average step entropy);
- use: a cached problem is rolled out as the cached path plus ``group_size - 1`` direct samples, no tree;
- evict: once the direct samples of a cached problem reach ``threshold`` correct, the policy solves it on its own
  and the entry goes (the next draw grows a tree again); past ``capacity`` entries the oldest goes first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CachedSolution:
    """A correct completion of a problem: its token ids and text."""

    tokens: tuple[int, ...]
    text: str


class ReplayBuffer:
    """Cached solutions by problem key, oldest first; ``added``/``evicted`` count the changes since
    ``reset_counts``."""

    def __init__(self, capacity: int, threshold: float) -> None:
        self.capacity = capacity
        self.threshold = threshold
        self._entries: OrderedDict[str, CachedSolution] = OrderedDict()
        self.added = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedSolution | None:
        return self._entries.get(key)

    def after_search(self, key: str, solution: CachedSolution | None, correct_share: float) -> bool:
        """Admit ``solution`` (a correct path of the tree, None if it found none) when the tree's share of correct
        paths is below ``threshold``; returns whether it was cached. The oldest entry makes room."""
        if solution is None or correct_share >= self.threshold:
            return False
        self._entries.pop(key, None)
        self._entries[key] = solution
        self.added += 1
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.evicted += 1
        return True

    def after_replay(self, key: str, correct_share: float) -> bool:
        """Evict ``key`` when the direct samples drawn beside its cached solution reached ``threshold`` correct;
        returns whether it went."""
        if correct_share < self.threshold or key not in self._entries:
            return False
        del self._entries[key]
        self.evicted += 1
        return True

    def reset_counts(self) -> None:
        self.added = self.evicted = 0

    def state_dict(self) -> dict[str, Any]:
        return {"entries": [(key, list(s.tokens), s.text) for key, s in self._entries.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._entries = OrderedDict(
            (key, CachedSolution(tuple(tokens), text)) for key, tokens, text in state["entries"]
        )
