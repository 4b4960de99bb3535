"""Re-thinking (Cog-Rethinker): the group helpers shared with guided re-attempts, the two re-thinking stages on
all-failed groups, what they queue and swap into the batch, their config checks and their place in a step."""

from __future__ import annotations

from functools import partial

import pytest
from helpers.data_fakes import FakeRuntime, make_sampler, rollouts_for

from verity.config import load_config
from verity.data.config import RethinkConfig
from verity.data.demos import Demonstration
from verity.data.groups import failed_groups, replace_groups, retry_prompt, template_fields
from verity.step.collect import collect_rollouts
from verity.step.rethink import rethink
from verity.types import Item

DECOMPOSE = "{prompt} | split"
REFLECT = "{prompt} | not {wrong}"


def item(i: int) -> Item:
    return Item(f"a/{i}", "a", f"q{i}", answer="1")


def test_failed_groups_are_those_without_a_reward_at_the_threshold() -> None:
    rollouts = rollouts_for(item(0), [0.0, 0.5], group=0) + rollouts_for(item(1), [0.0, 1.0], group=1)
    rollouts += rollouts_for(item(2), [0.9, 0.2], group=2)
    assert failed_groups(rollouts, threshold=1.0) == [0, 2]
    assert failed_groups(rollouts, threshold=0.9) == [0]


def test_replace_groups_swaps_whole_groups_and_keeps_group_order() -> None:
    rollouts = rollouts_for(item(0), [0.0, 0.0], group=0) + rollouts_for(item(1), [1.0], group=1)
    retries = rollouts_for(item(9), [1.0, 0.0, 1.0], group=0) + rollouts_for(item(8), [0.0], group=5)
    out = replace_groups(rollouts, retries, [0])
    assert [(r.group, r.item.id, r.reward) for r in out] == [
        (0, "a/9", 1.0),
        (0, "a/9", 0.0),
        (0, "a/9", 1.0),
        (1, "a/1", 1.0),
    ]


def test_retry_prompts_and_their_fields() -> None:
    assert retry_prompt("{prompt}\nHint: {hint}", "2+2", hint="carry") == "2+2\nHint: carry"
    assert retry_prompt(DECOMPOSE, "2+2", wrong="5") == "2+2 | split"  # unused fields are ignored
    assert template_fields(REFLECT) == {"prompt", "wrong"}


def scripted_generate(calls: list[list[str]], solves):
    """A generate function: the k-th sample of a draw is rewarded ``solves(prompt, k)``."""

    def generate(draws):
        calls.append([d.item.prompt for d in draws])
        out = []
        for g, d in enumerate(draws):
            rewards = [solves(d.item.prompt, k) for k in range(d.group_size)]
            out += rollouts_for(d.item, rewards, group=g)
        return out

    return generate


def test_decomposition_then_reflection_rescue_failed_groups_and_queue_direct_prompt_demos() -> None:
    # Groups 0 and 2 fail. The decomposition prompt solves item 0 (its 2nd sample); item 2 needs the reflection,
    # which quotes its first wrong answer ('x') and solves every sample.
    rollouts = rollouts_for(item(0), [0.0, 0.0], group=0) + rollouts_for(item(1), [0.0, 1.0], group=1)
    rollouts += rollouts_for(item(2), [0.0, 0.0], group=2)
    calls: list[list[str]] = []
    solves = {("q0 | split", 1): 1.0, ("q2 | not x", 0): 1.0, ("q2 | not x", 1): 1.0}
    generate = scripted_generate(calls, lambda prompt, k: solves.get((prompt, k), 0.0))
    queued: list[Demonstration] = []
    cfg = RethinkConfig(enabled=True, decompose_template=DECOMPOSE, reflect_template=REFLECT)
    out, metrics = rethink(rollouts, generate, cfg=cfg, threshold=1.0, queue=queued.extend)
    assert calls == [["q0 | split", "q2 | split"], ["q2 | not x"]]  # reflection only for what is still unsolved
    assert metrics == {
        "rethink/failed_groups": 2.0,
        "rethink/decompose_rescued": 1.0,
        "rethink/reflect_rescued": 1.0,
        "rethink/demonstrations": 3.0,
    }
    # Demonstrations keep the direct prompt (train-test consistency): one from item 0, two from item 2.
    assert [(d.item.prompt, d.text) for d in queued] == [("q0", "x"), ("q2", "x"), ("q2", "x")]
    # in_batch: rescued groups replace the failed ones, under their re-thinking prompts.
    assert [(r.group, r.item.prompt, r.reward) for r in out] == [
        (0, "q0 | split", 0.0),
        (0, "q0 | split", 1.0),
        (1, "q1", 0.0),
        (1, "q1", 1.0),
        (2, "q2 | not x", 1.0),
        (2, "q2 | not x", 1.0),
    ]


def test_without_in_batch_the_batch_is_unchanged_and_unrescued_groups_stay() -> None:
    rollouts = rollouts_for(item(0), [0.0, 0.0], group=0)
    queued: list[Demonstration] = []
    cfg = RethinkConfig(enabled=True, reflect_template=None, in_batch=False, group_size=3)
    calls: list[list[str]] = []
    generate = scripted_generate(calls, lambda prompt, k: float(k == 2))
    out, metrics = rethink(rollouts, generate, cfg=cfg, threshold=1.0, queue=queued.extend)
    assert out == rollouts and len(queued) == 1
    assert metrics["rethink/decompose_rescued"] == 1.0 and metrics["rethink/reflect_rescued"] == 0.0
    nothing: list[Demonstration] = []
    out, metrics = rethink(
        rollouts, scripted_generate([], lambda p, k: 0.0), cfg=cfg, threshold=1.0, queue=nothing.extend
    )
    assert out == rollouts and nothing == [] and metrics["rethink/decompose_rescued"] == 0.0


def test_collect_runs_rethinking_per_round_with_summed_counts_and_times() -> None:
    # Every direct sample fails; a re-thinking prompt solves the first sample. Each generate call takes 1 s.
    sampler = make_sampler("a", rethink={"enabled": True, "reflect_template": None, "every": 1})
    runtime = FakeRuntime(lambda it, k: float("split" in it.prompt and k == 0))
    cfg = sampler.data.rethink.model_copy(update={"decompose_template": "{prompt} split"})
    step = partial(rethink, cfg=cfg, threshold=1.0, queue=partial(sampler.demos.add, "rethink"))
    _, metrics = collect_rollouts(sampler, runtime, lambda it: [1], 2, [step])
    assert metrics["rethink/failed_groups"] == 2.0 and metrics["rethink/decompose_rescued"] == 2.0
    assert runtime.calls == [(2, 4), (2, 4)] and runtime.timings["time/generate"] == 2.0  # both calls counted
    assert sampler.rates.trials("a/0") == 4  # pass rates learn from the direct rollouts only
    [(recipe, demos)] = sampler.demonstrations()
    assert recipe == "rethink" and [d.item.prompt for d in demos] == ["a 0", "a 1"]


def test_config_rejects_bad_templates_and_multi_turn_runs() -> None:
    with pytest.raises(ValueError, match=r"data.rethink.reflect_template: .*needs \{prompt\}"):
        load_config({"data": {"rethink": {"reflect_template": "fix {wrong}"}}})
    with pytest.raises(ValueError, match=r"data.rethink.decompose_template: .*only \['prompt'\]"):
        load_config({"data": {"rethink": {"decompose_template": "{prompt} not {wrong}"}}})
    with pytest.raises(
        ValueError, match=r"data\.rethink restates prompts, which rollout\.workflow=episode does not"
    ):
        load_config({"data": {"rethink": {"enabled": True}}, "env": {"name": "calculator"}})
