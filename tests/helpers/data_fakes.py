"""Fakes for the data-path tests: counting sources and a runtime whose rewards are set per item."""

from __future__ import annotations

from collections.abc import Callable

from verity.data.config import DataConfig, TaskConfig
from verity.data.samplers import Sampler
from verity.types import Completion, Item, Rollout, SamplingParams, Score


class CountingSource:
    """Item i of task ``name`` has id ``name/i`` and prompt ``name i``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def train_item(self, index: int) -> Item:
        return Item(id=f"{self.name}/{index}", task=self.name, prompt=f"{self.name} {index}", answer="1")

    def eval_items(self, n: int) -> list[Item]:
        return [Item(id=f"{self.name}/eval/{i}", task=self.name, prompt=f"eval {i}", answer="1") for i in range(n)]


def data_config(*names: str, **settings: object) -> DataConfig:
    tasks = [TaskConfig(source="generator", name=n, function="m:f") for n in names]
    return DataConfig.model_validate({"tasks": tasks, **settings})


def make_sampler(
    *names: str, held_out: set[str] | None = None, group_size: int = 4, **settings: object
) -> Sampler:
    return Sampler(
        [CountingSource(n) for n in names],
        data_config(*names, **settings),
        SamplingParams(max_new_tokens=8, n=group_size),
        held_out=held_out or set(),
        seed=0,
    )


def rollouts_for(item: Item, rewards: list[float], group: int = 0, length: int = 3) -> list[Rollout]:
    return [
        Rollout(item, group, [1, 2], Completion([5] * length, [0.0] * length, "x", "stop"), score=Score(r))
        for r in rewards
    ]


class FakeRuntime:
    """Scores the k-th sample of an item with ``reward(item, k)``; records the ``n`` of every generate call."""

    def __init__(self, reward: Callable[[Item, int], float]) -> None:
        self.reward = reward
        self.calls: list[tuple[int, int]] = []  # (number of prompts, n)
        self.timings: dict[str, float] = {}

    def rollout(self, items: list[Item], prompt_ids: list[list[int]], params: SamplingParams) -> list[Rollout]:
        self.calls.append((len(items), params.n))
        self.timings.update({"time/generate": 1.0, "time/score": 0.5})
        return [
            r
            for g, item in enumerate(items)
            for r in rollouts_for(item, [self.reward(item, k) for k in range(params.n)], group=g)
        ]
