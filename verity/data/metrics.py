"""Metrics of a step's rollouts: by task family (sampled ones only; ViSurf references are left out), by item
field, and their reward range."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from verity.data.groups import split_groups
from verity.types import Rollout

# The finish reason of a ViSurf reference: a completion the engine did not sample.
REFERENCE = "reference"


def task_metrics(rollouts: list[Rollout], threshold: float) -> dict[str, float]:
    """For each task: ``pass_rate`` (share of its groups with a correct sample), ``response_len`` (mean tokens)
    and ``share`` (its share of the batch's groups)."""
    groups = [[r for r in g if r.completion.finish_reason != REFERENCE] for g in split_groups(rollouts)]
    groups = [g for g in groups if g]
    out: dict[str, float] = {}
    for task in sorted({g[0].item.task for g in groups}):
        mine = [g for g in groups if g[0].item.task == task]
        samples = [r for g in mine for r in g]
        out[f"task/{task}/pass_rate"] = sum(any(r.reward >= threshold for r in g) for g in mine) / len(mine)
        out[f"task/{task}/response_len"] = sum(len(r.completion.token_ids) for r in samples) / len(samples)
        out[f"task/{task}/share"] = len(mine) / len(groups)
    return out


MAX_GROUP_VALUES = 20


def field_metrics(rollouts: Sequence[Any], fields: Sequence[str], threshold: float) -> dict[str, float]:
    """Mean reward and accuracy (reward >= ``threshold``) of ``rollouts`` per value of each item field in
    ``fields`` (a key of the item's row: ``task``, ``answer`` or any extra column), as ``by/<field>/<value>/...``.
    Rollouts whose item lacks the field are left out; past ``MAX_GROUP_VALUES`` values the rest are dropped."""
    out: dict[str, float] = {}
    for name in fields:
        groups: dict[str, list[float]] = {}
        for r in rollouts:
            value = getattr(r.item, name, None) if name in ("task", "answer") else r.item.meta.get(name)
            if value is None:
                continue
            key = str(value).replace("/", "_")
            if key in groups or len(groups) < MAX_GROUP_VALUES:
                groups.setdefault(key, []).append(r.score.value)
        for key, rewards in groups.items():
            out[f"by/{name}/{key}/reward"] = sum(rewards) / len(rewards)
            out[f"by/{name}/{key}/accuracy"] = sum(v >= threshold for v in rewards) / len(rewards)
    return out


def reward_range(rollouts: Sequence[Any]) -> dict[str, float]:
    """The step's lowest and highest reward (they bound the reward band of the plots)."""
    values = [r.score.value for r in rollouts]
    return {"reward/min": min(values), "reward/max": max(values)} if values else {}
