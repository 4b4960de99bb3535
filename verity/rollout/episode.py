"""The Episode seam: from items to unscored rollouts. Single-turn episodes are one generation per sample."""

from __future__ import annotations

from verity.rollout.engine import Engine, SamplingParams
from verity.types import Item, Rollout


def single_turn_rollouts(
    engine: Engine, items: list[Item], prompt_ids: list[list[int]], params: SamplingParams
) -> list[Rollout]:
    """``params.n`` rollouts per item; rollouts of item i form group i."""
    outputs = engine.generate(prompt_ids, params)
    return [
        Rollout(item=item, group=g, prompt_ids=ids, completion=completion)
        for g, (item, ids, completions) in enumerate(zip(items, prompt_ids, outputs, strict=True))
        for completion in completions
    ]
