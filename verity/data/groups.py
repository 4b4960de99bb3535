"""Groups of rollouts (the samples of one prompt): splitting a step's rollouts into groups, and re-attempts of
groups in which no rollout succeeded: which groups failed, the prompt of a re-attempt, and putting a re-attempted
group back in its place. Shared by the episode runner's guided re-attempts (Agent-RLVR hints) and the
single-turn re-thinking rollouts (Cog-Rethinker, ``verity.step.rethink``)."""

from __future__ import annotations

from collections.abc import Collection
from string import Formatter

from verity.types import Rollout


def split_groups(rollouts: list[Rollout]) -> list[list[Rollout]]:
    """The rollouts of each group, groups in order of first appearance."""
    groups: dict[int, list[Rollout]] = {}
    for r in rollouts:
        groups.setdefault(r.group, []).append(r)
    return list(groups.values())


def failed_groups(rollouts: list[Rollout], threshold: float) -> list[int]:
    """Ids of the groups none of whose rollouts reached ``threshold``, ascending."""
    groups = {r.group for r in rollouts}
    return sorted(groups - {r.group for r in rollouts if r.reward >= threshold})


def retry_prompt(template: str, prompt: str, **fields: str) -> str:
    """``template`` filled with the original ``prompt`` and the re-attempt's other fields (a hint, a wrong
    answer)."""
    return template.format(prompt=prompt, **fields)


def template_fields(template: str) -> set[str]:
    """The ``{name}`` fields a re-attempt template uses (for checking it against the fields it will get)."""
    return {name for _, name, _, _ in Formatter().parse(template) if name is not None}


def replace_groups(rollouts: list[Rollout], retries: list[Rollout], groups: Collection[int]) -> list[Rollout]:
    """``rollouts`` with every group in ``groups`` replaced by the ``retries`` of that group, ordered by group."""
    kept = [r for r in rollouts if r.group not in set(groups)]
    return sorted(kept + [r for r in retries if r.group in set(groups)], key=lambda r: r.group)
