"""Turning a step's draws into the rollouts it trains on: one generate call per group size, pass-rate updates,
augmentations of each round (re-thinking rollouts, ViSurf references), and DAPO dynamic sampling (drop
zero-variance groups, draw more)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial

from verity.data.groups import split_groups
from verity.data.samplers import Draw, Sampler
from verity.rewards.compose import finite_score
from verity.runtime.base import Runtime
from verity.types import Item, Rollout, SamplingParams

Encode = Callable[[Item], list[int]]
Generate = Callable[[list[Draw]], list[Rollout]]
# A round's rollouts -> the rollouts it trains on and counts to log; may generate more (with the step's sampling).
Augment = Callable[[list[Rollout], Generate], tuple[list[Rollout], dict[str, float]]]


def generate_groups(
    runtime: Runtime,
    encode: Encode,
    draws: list[Draw],
    params: SamplingParams,
    totals: dict[str, float] | None = None,
) -> list[Rollout]:
    """Scored rollouts of ``draws``; the engine takes one ``n`` per call, so draws are grouped by group size. A
    non-finite reward (from an environment or a workflow's own scoring) becomes a failed score here, before the
    dynamic-sampling filter or any estimator reads it; the run's reward watch counts and warns about it.
    Group ids are the draws' positions, and rollouts come back in draw order. Phase times are summed into
    ``totals`` (a step's running sums; a fresh one by default) and ``runtime.timings`` reports them."""
    by_size: dict[int, list[int]] = {}
    for position, draw in enumerate(draws):
        by_size.setdefault(draw.group_size, []).append(position)
    out: list[Rollout] = []
    totals = {} if totals is None else totals
    for size, positions in by_size.items():
        items = [draws[p].item for p in positions]
        rollouts = runtime.rollout(items, [encode(it) for it in items], replace(params, n=size))
        out += [replace(r, group=positions[r.group], score=finite_score(r.score)) for r in rollouts]
        for key, seconds in runtime.timings.items():
            totals[key] = totals.get(key, 0.0) + seconds
    # Several generate calls per step: report their summed phase times, not the last call's.
    runtime.timings.update(totals)
    return sorted(out, key=lambda r: r.group)


def has_signal(group: list[Rollout]) -> bool:
    """DAPO's filter: a group whose rewards are all equal has zero group-relative advantage everywhere."""
    return len({r.reward for r in group}) > 1


def collect_rollouts(
    sampler: Sampler,
    runtime: Runtime,
    encode: Encode,
    n_prompts: int,
    augment: Sequence[Augment] = (),
) -> tuple[list[Rollout], dict[str, float]]:
    """Rollouts of ``n_prompts`` groups, with group ids 0..n_prompts-1, sampled as the sampler's active stage
    says (``Sampler.params``).

    Without dynamic sampling this is one round. With it (DAPO, Yu et al. 2025), zero-variance groups are dropped
    and more prompts drawn, ``ceil(missing / keep_rate)`` per round (at most 4x the missing count), for at most
    ``max_rounds`` rounds; a batch still short is padded with dropped groups so its size stays fixed.
    Each ``augment`` (re-thinking, ViSurf references) runs on every round, in order, after the pass rates learn
    from it and before the filter, so an all-failed group it rescues is kept; the counts it returns are summed
    over rounds.
    """
    dyn = sampler.data.dynamic_sampling
    rounds_allowed = dyn.max_rounds if dyn.enabled else 1
    params = sampler.params()
    kept: list[list[Rollout]] = []
    dropped: list[list[Rollout]] = []
    drawn = rounds = 0
    extra: dict[str, float] = {}
    generate = partial(generate_groups, runtime, encode, params=params, totals={})
    while len(kept) < n_prompts and rounds < rounds_allowed:
        missing = n_prompts - len(kept)
        keep_rate = len(kept) / drawn if drawn else 1.0
        want = min(math.ceil(missing / max(keep_rate, 0.25)), 4 * missing)
        rollouts = generate(sampler.sample(want))
        sampler.observe(rollouts)
        for step in augment:
            rollouts, counts = step(rollouts, generate)
            for key, value in counts.items():
                extra[key] = extra.get(key, 0.0) + value
        drawn, rounds = drawn + want, rounds + 1
        for group in split_groups(rollouts):
            (kept if not dyn.enabled or has_signal(group) else dropped).append(group)
    batch = (kept + dropped)[:n_prompts]
    out = [replace(r, group=g) for g, group in enumerate(batch) for r in group]
    metrics = {
        "data/drawn_groups": float(drawn),
        "data/dropped_groups": float(len(dropped)),
        "data/padded_groups": float(max(0, n_prompts - len(kept))),
        "data/rounds": float(rounds),
        **extra,
    }
    return out, metrics
