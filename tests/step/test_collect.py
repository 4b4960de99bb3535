"""Collecting a step's rollouts: one generate call per group size, DAPO dynamic sampling, ViSurf references,
per-task metrics."""

from __future__ import annotations

import pytest
import torch
from helpers.data_fakes import FakeRuntime, make_sampler, rollouts_for

from verity.data.metrics import task_metrics
from verity.data.samplers import Draw
from verity.step.collect import collect_rollouts, generate_groups
from verity.step.guidance import add_references
from verity.types import Item, SamplingParams, Score

PARAMS = SamplingParams(max_new_tokens=8, n=4)


def encode(item: Item) -> list[int]:
    return [1, 2]


def index(item: Item) -> int:
    return int(item.id.rsplit("/", 1)[1])


def test_draws_are_grouped_by_size_and_come_back_in_draw_order() -> None:
    runtime = FakeRuntime(lambda item, k: 0.0)
    draws = [Draw(Item(f"a/{i}", "a", "p"), n) for i, n in enumerate([2, 3, 2])]
    rollouts = generate_groups(runtime, encode, draws, PARAMS)
    assert runtime.calls == [(2, 2), (1, 3)]
    assert [(r.group, r.item.id) for r in rollouts] == [(0, "a/0")] * 2 + [(1, "a/1")] * 3 + [(2, "a/2")] * 2
    assert runtime.timings == {"time/generate": 2.0, "time/score": 1.0}  # summed over both calls


def test_without_dynamic_sampling_all_groups_are_kept() -> None:
    sampler = make_sampler("a")
    rollouts, metrics = collect_rollouts(sampler, FakeRuntime(lambda item, k: 1.0), encode, 3)
    assert sorted({r.group for r in rollouts}) == [0, 1, 2] and len(rollouts) == 12
    assert metrics == {"data/drawn_groups": 3, "data/dropped_groups": 0, "data/padded_groups": 0, "data/rounds": 1}


def test_dynamic_sampling_drops_zero_variance_groups_and_draws_more() -> None:
    # Even items: mixed rewards (kept); odd items: all 1 (dropped). Round 1 draws 4 -> keeps 2; keep rate 1/2, so
    # round 2 draws ceil(2 / 0.5) = 4 more -> keeps 2: the batch is full after 8 drawn, 4 dropped.
    sampler = make_sampler("a", dynamic_sampling={"enabled": True, "max_rounds": 3})
    runtime = FakeRuntime(lambda item, k: float(k % 2) if index(item) % 2 == 0 else 1.0)
    rollouts, metrics = collect_rollouts(sampler, runtime, encode, 4)
    assert metrics == {"data/drawn_groups": 8, "data/dropped_groups": 4, "data/padded_groups": 0, "data/rounds": 2}
    assert sorted({r.item.id for r in rollouts}) == ["a/0", "a/2", "a/4", "a/6"]
    assert sorted({r.group for r in rollouts}) == [0, 1, 2, 3]
    assert sampler.rates.trials("a/1") == 4  # dropped groups still teach the pass-rate estimates


def test_dynamic_sampling_pads_a_short_batch_after_max_rounds() -> None:
    sampler = make_sampler("a", dynamic_sampling={"enabled": True, "max_rounds": 2})
    rollouts, metrics = collect_rollouts(sampler, FakeRuntime(lambda item, k: 0.0), encode, 2)
    # Nothing has signal: round 1 draws 2, round 2 draws min(ceil(2/0.25), 4*2) = 8; padded with dropped groups.
    assert metrics == {
        "data/drawn_groups": 10,
        "data/dropped_groups": 10,
        "data/padded_groups": 2,
        "data/rounds": 2,
    }
    assert len({r.group for r in rollouts}) == 2


def test_stage_max_new_tokens_reaches_the_engine() -> None:
    sampler = make_sampler("a", stages=[{"name": "short", "max_new_tokens": 3}])
    seen = []

    class Recording(FakeRuntime):
        def rollout(self, items, prompt_ids, params):
            seen.append(params.max_new_tokens)
            return super().rollout(items, prompt_ids, params)

    collect_rollouts(sampler, Recording(lambda item, k: 0.0), encode, 1)
    assert seen == [3]


class CharTokenizer:
    eos_token_id, pad_token_id = 99, 0

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) % 50 + 1 for c in text]


class ConstantLearner:
    """Log-prob of every token is -0.5 - 0.01 * position, so the slice taken for the reference can be checked."""

    def logprobs(self, batch) -> torch.Tensor:
        positions = torch.arange(batch.input_ids.shape[1], dtype=torch.float32)
        return (-0.5 - 0.01 * positions).expand(batch.input_ids.shape).clone()


def test_visurf_adds_the_scored_reference_with_learner_logprobs() -> None:
    items = [Item("a/0", "a", "p", answer="7"), Item("a/1", "a", "p", answer=None)]
    rollouts = rollouts_for(items[0], [0.0, 0.0], group=0) + rollouts_for(items[1], [0.0, 1.0], group=1)
    scored = []

    def score(its, texts):
        scored.extend(texts)
        return [Score(1.0) for _ in texts]

    out = add_references(rollouts, "answer", CharTokenizer(), ConstantLearner(), score)
    refs = [r for r in out if r.completion.finish_reason == "reference"]
    assert scored == ["<answer>7</answer>"] and len(refs) == 1  # item a/1 has no answer: no reference
    ref = refs[0]
    assert ref.group == 0 and ref.reward == 1.0 and ref.prompt_ids == [1, 2]
    assert ref.completion.token_ids[-1] == 99 and len(ref.completion.token_ids) == len("<answer>7</answer>") + 1
    expected = [-0.5 - 0.01 * (2 + t) for t in range(len(ref.completion.token_ids))]  # positions after the prompt
    assert ref.completion.logprobs == pytest.approx(expected)
    assert [r.group for r in out] == [0, 0, 0, 1, 1]


def test_task_metrics_leave_references_out() -> None:
    a, b = Item("a/0", "a", "p"), Item("b/0", "b", "p")
    rollouts = rollouts_for(a, [0.0, 1.0], group=0, length=2) + rollouts_for(b, [0.0, 0.0], group=1, length=4)
    rollouts += rollouts_for(a, [0.0, 0.0], group=2, length=6)
    metrics = task_metrics(rollouts, threshold=1.0)
    assert metrics == {
        "task/a/pass_rate": 0.5,
        "task/a/response_len": 4.0,
        "task/a/share": 2 / 3,
        "task/b/pass_rate": 0.0,
        "task/b/response_len": 4.0,
        "task/b/share": 1 / 3,
    }
