"""Per-task-family metrics of a step's rollouts (sampled ones only; ViSurf references are left out)."""

from __future__ import annotations

from verity.rollout.groups import split_groups
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
