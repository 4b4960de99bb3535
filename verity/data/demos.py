"""Demonstrations the policy is fine-tuned on between RL updates, one queue per recipe:

- ``relift``: the reference solution of an item no rollout solved (ReLIFT);
- ``rethink``: a correct re-thinking rollout of an item no direct rollout solved (Cog-Rethinker);
- ``expert_iteration``: the policy's own correct rollouts of items it solves at most ``max_pass_rate`` of the
  time (BFS-Prover-V2's expert iteration, problem-level filter).

Every demonstration is trained on under the item's direct prompt. The queues share one cadence rule
(``SftFeedConfig``) and one SFT step (``verity.step.guidance.sft_update``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from verity.data.config import DataConfig, SftFeedConfig
from verity.data.prompts import reference_solution
from verity.types import Item, Rollout

RECIPES = ("relift", "rethink", "expert_iteration")


@dataclass(frozen=True)
class Demonstration:
    """A completion to imitate after ``item``'s direct prompt."""

    item: Item
    text: str


def too_easy(successes: int, trials: int, max_pass_rate: float) -> bool:
    """Expert iteration's problem-level filter: an item whose group solved ``successes / trials > max_pass_rate``
    teaches little that RL does not already reinforce, so its successes are not queued."""
    return successes / trials > max_pass_rate


class DemoQueue:
    """Oldest-first queue of at most ``cfg.queue_size`` demonstrations, each (item id, text) at most once while
    queued, released every ``cfg.every``-th step."""

    def __init__(self, cfg: SftFeedConfig) -> None:
        self.cfg = cfg
        self.items: deque[Demonstration] = deque(maxlen=cfg.queue_size)

    def add(self, demo: Demonstration) -> None:
        if not any(d.item.id == demo.item.id and d.text == demo.text for d in self.items):
            self.items.append(demo)

    def due(self, step: int) -> bool:
        """Whether 0-based RL step ``step`` ends with an SFT round."""
        return bool(self.items) and (step + 1) % self.cfg.every == 0

    def take(self, count: int) -> list[Demonstration]:
        return [self.items.popleft() for _ in range(min(count, len(self.items)))]


class DemoBank:
    """The queues of the enabled recipes; ``observe`` fills ReLIFT's and expert iteration's from scored direct
    rollouts, ``add`` takes re-thinking's rescues."""

    def __init__(self, data: DataConfig, threshold: float) -> None:
        self.data = data
        self.threshold = threshold
        self.queues = {name: DemoQueue(getattr(data, name)) for name in RECIPES if getattr(data, name).enabled}

    def observe(self, groups: list[list[Rollout]]) -> None:
        """Queue what the direct rollouts of one round teach, group by group."""
        for group in groups:
            item = group[0].item
            correct = [r.completion.text for r in group if r.reward >= self.threshold]
            reference = reference_solution(item, self.data.reference_field)
            if not correct and reference is not None and "relift" in self.queues:
                self.queues["relift"].add(Demonstration(item, reference))
            expert = self.data.expert_iteration
            if (
                correct
                and "expert_iteration" in self.queues
                and not too_easy(len(correct), len(group), expert.max_pass_rate)
            ):
                for text in correct:
                    self.queues["expert_iteration"].add(Demonstration(item, text))

    def add(self, recipe: str, demos: list[Demonstration]) -> None:
        if recipe in self.queues:
            for demo in demos:
                self.queues[recipe].add(demo)

    def due(self, step: int) -> list[tuple[str, list[Demonstration]]]:
        """The SFT rounds 0-based RL step ``step`` ends with: per due recipe, ``batch_size`` demonstrations
        (ReLIFT, re-thinking) or the whole queue (expert iteration, which filters and batches them itself)."""
        rounds = []
        for name, queue in self.queues.items():
            if queue.due(step):
                count = len(queue.items) if name == "expert_iteration" else queue.cfg.batch_size
                rounds.append((name, queue.take(count)))
        return rounds

    def metrics(self) -> dict[str, float]:
        return {f"data/{name}_queue": float(len(queue.items)) for name, queue in self.queues.items()}

    def state_dict(self) -> dict[str, Any]:
        return {name: list(queue.items) for name, queue in self.queues.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, queue in self.queues.items():
            queue.items = deque(state.get(name, []), maxlen=queue.cfg.queue_size)
