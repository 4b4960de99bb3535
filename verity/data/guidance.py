"""Learning from reference solutions inside the RL run: ViSurf (the reference joins its group) and ReLIFT (SFT
steps on items no rollout solved)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from verity.data.collect import Encode, split_groups
from verity.data.metrics import REFERENCE
from verity.data.prompts import reference_solution
from verity.train.batching import collate
from verity.train.sft import demonstration_batch
from verity.types import Completion, Item, Rollout, Score

Scorer = Callable[[list[Item], list[str]], list[Score]]


def add_references(
    rollouts: list[Rollout], field: str, tokenizer: Any, learner: Any, score: Scorer
) -> list[Rollout]:
    """ViSurf (Liu et al. 2025): each group whose item has a reference solution gains it as one more member,
    scored by the verifiers like any completion, so group-relative advantages rank it against the samples.

    The engine did not produce it, so its behaviour log-probs are the learner's own (teacher-forced, at the
    sampling temperature) under the weights that produced the group. The PPO ratio of the reference is then
    ``pi_theta / pi_old`` exactly as for sampled rows: 1 at the first update, whose gradient is
    ``A * grad log pi(reference)`` (an advantage-weighted SFT term), and clipped after that, which bounds how far
    one step moves towards a sequence the policy would rarely sample. No importance weight to an expert
    behaviour policy is applied (there is none to evaluate); the clip is the only off-policy control.
    """
    refs: list[Rollout] = []
    for group in split_groups(rollouts):
        head = group[0]
        text = reference_solution(head.item, field)
        if text is None:
            continue
        ids = [*tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]
        completion = Completion(ids, [0.0] * len(ids), text, REFERENCE, head.completion.version)
        refs.append(Rollout(head.item, head.group, head.prompt_ids, completion))
    if not refs:
        return rollouts
    logprobs = learner.logprobs(collate(refs, tokenizer.pad_token_id))  # (R, T)
    scores = score([r.item for r in refs], [r.completion.text for r in refs])
    for row, (ref, s) in enumerate(zip(refs, scores, strict=True)):
        start = len(ref.prompt_ids)
        ref.completion.logprobs = logprobs[row, start : start + len(ref.completion.token_ids)].tolist()
        refs[row] = replace(ref, score=s)
    return sorted(rollouts + refs, key=lambda r: r.group)


def relift_update(
    learner: Any, tokenizer: Any, encode: Encode, items: list[Item], field: str, lr_scale: float
) -> dict[str, float]:
    """ReLIFT (Ma et al. 2025): one SFT step, token-mean NLL of the reference solutions of ``items`` (the queued
    items no rollout solved), taken by the learner at ``lr_scale`` times its current rate. Returns
    ``relift/loss`` and ``relift/items``."""
    texts = [reference_solution(item, field) or "" for item in items]
    targets = [[*tokenizer.encode(t, add_special_tokens=False), tokenizer.eos_token_id] for t in texts]
    batch = demonstration_batch([encode(it) for it in items], targets, tokenizer.pad_token_id)
    loss = learner.sft_step(batch, lr_scale)
    return {"relift/loss": loss, "relift/items": float(len(items)) if math.isfinite(loss) else 0.0}
