"""Re-thinking rollouts for groups in which every direct rollout failed (Cog-Rethinker, Sun et al. 2025).

After the direct rollout of a round, each all-failed group is rolled out again from a decomposition prompt
(``data.rethink.decompose_template``); the groups still unsolved are rolled out from a reflection prompt that
quotes one of their wrong answers (``reflect_template``). A group with a correct re-rollout is rescued: its correct
completions are queued as demonstrations under the item's direct prompt (SFT with the direct template keeps
training and test prompts alike), and with ``in_batch`` the rescued group replaces the failed one in the RL batch,
under its re-thinking prompt, so the policy is also rewarded for re-thinking well.

Our reading of the paper: the re-rollouts reuse the failed group's size, the reflection quotes the first wrong
direct answer, and the paper's buffer of past successful decompositions shown as examples is left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from verity.data.config import RethinkConfig
from verity.data.demos import Demonstration
from verity.data.groups import failed_groups, replace_groups, retry_prompt, split_groups
from verity.data.samplers import Draw
from verity.types import Item, Rollout

Generate = Callable[[list[Draw]], list[Rollout]]
Queue = Callable[[list[Demonstration]], None]


def restated(group: list[Rollout], template: str) -> Item:
    """The item of a failed group with its prompt restated by ``template`` (``{prompt}``, and ``{wrong}``: the
    group's first answer)."""
    item = group[0].item
    return replace(item, prompt=retry_prompt(template, item.prompt, wrong=group[0].completion.text.strip()))


def rethink(
    rollouts: list[Rollout], generate: Generate, *, cfg: RethinkConfig, threshold: float, queue: Queue
) -> tuple[list[Rollout], dict[str, float]]:
    """Rescue the all-failed groups of ``rollouts`` by the re-thinking stages; returns the step's rollouts (rescued
    groups swapped in when ``cfg.in_batch``) and counts: ``rethink/failed_groups``, ``rethink/<stage>_rescued``,
    ``rethink/demonstrations``."""
    failed = failed_groups(rollouts, threshold)
    metrics = {"rethink/failed_groups": float(len(failed)), "rethink/demonstrations": 0.0}
    direct = {group[0].group: group for group in split_groups(rollouts)}
    for stage, template in (("decompose", cfg.decompose_template), ("reflect", cfg.reflect_template)):
        metrics[f"rethink/{stage}_rescued"] = 0.0
        if template is None or not failed:
            continue
        draws = [Draw(restated(direct[g], template), cfg.group_size or len(direct[g])) for g in failed]
        retries = [replace(r, group=failed[r.group]) for r in generate(draws)]
        rescued = sorted(set(failed) - set(failed_groups(retries, threshold)))
        demos = [
            Demonstration(direct[r.group][0].item, r.completion.text)
            for r in retries
            if r.group in rescued and r.reward >= threshold
        ]
        queue(demos)
        if cfg.in_batch:
            rollouts = replace_groups(rollouts, retries, rescued)
        metrics[f"rethink/{stage}_rescued"] = float(len(rescued))
        metrics["rethink/demonstrations"] += float(len(demos))
        failed = [g for g in failed if g not in rescued]
    return rollouts, metrics
