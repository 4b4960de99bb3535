"""Sampler: mixture and balanced shares, held-out skipping, pass rates, adaptive group size, hard-focus, stages,
ReLIFT queue, and an exact resume from state_dict."""

from __future__ import annotations

import pytest
from helpers.data_fakes import CountingSource, data_config, make_sampler, rollouts_for

from verity.data.config import DifficultyConfig, StageConfig
from verity.data.difficulty import PassRates, group_size_for
from verity.data.samplers import Sampler
from verity.data.stages import StageSchedule, condition_met
from verity.types import Item, SamplingParams


def tasks_of(draws) -> list[str]:
    return [d.item.task for d in draws]


def test_balanced_gives_every_task_an_equal_share_whatever_the_weights() -> None:
    sampler = make_sampler("a", "b", "c", sampling="balanced")
    sampler.weights = {"a": 100.0, "b": 1.0, "c": 1.0}  # ignored by balanced sampling
    first = tasks_of(sampler.sample(4))
    second = tasks_of(sampler.sample(4))
    assert first == ["a", "b", "c", "a"]
    assert second == ["b", "c", "a", "b"]  # the extra prompt rotates: 3/3/2 after eight draws
    assert sorted((first + second).count(t) for t in "abc") == [2, 3, 3]


def test_mixture_follows_weights() -> None:
    sampler = make_sampler("a", "b")
    sampler.weights = {"a": 3.0, "b": 1.0}
    share = tasks_of(sampler.sample(4000)).count("a") / 4000
    assert share == pytest.approx(0.75, abs=0.03)


def test_each_task_stream_advances_and_skips_held_out_prompts() -> None:
    sampler = make_sampler("a", held_out={"a 1"})
    assert [d.item.id for d in sampler.sample(3)] == ["a/0", "a/2", "a/3"]
    assert sampler.skipped == 1


def test_pass_rates_decay_shrink_to_task_rate_and_task_ema() -> None:
    rates = PassRates(DifficultyConfig(decay=0.5, prior_strength=2.0, task_momentum=0.75))
    rates.observe("x", "t", successes=2, trials=4)  # S=2, T=4; task rate 0.5
    rates.observe("x", "t", successes=4, trials=4)  # S=0.5*2+4=5, T=0.5*4+4=6; task 0.75*0.5+0.25*1=0.625
    assert rates.task_rate("t") == pytest.approx(0.625)
    assert rates.item_rate("x", "t") == pytest.approx((5 + 2 * 0.625) / (6 + 2))
    assert rates.item_rate("unseen", "t") == pytest.approx(0.625)
    assert rates.item_rate("unseen", "other") is None


def test_pass_rates_forget_least_recently_seen_items() -> None:
    rates = PassRates(DifficultyConfig(max_items=2))
    for item in ("a", "b", "a", "c"):
        rates.observe(item, "t", 1, 2)
    assert list(rates.items) == ["a", "c"]


@pytest.mark.parametrize(
    ("rate", "expected"),
    # 2 * 0.5^3 = 0.25; 0.9^13 = 0.254 > 0.25 >= 0.9^14 = 0.229; p = 0 is always all-equal, so the cap.
    [(None, 8), (0.5, 3), (0.1, 14), (0.9, 14), (0.0, 16)],
)
def test_adaptive_group_size(rate: float | None, expected: int) -> None:
    n = group_size_for(rate, default=8, min_size=2, max_size=16, target=0.25)
    if rate not in (None, 0.0):
        assert rate**n + (1 - rate) ** n <= 0.25 < rate ** (n - 1) + (1 - rate) ** (n - 1)
    assert n == expected


def test_sampler_uses_adaptive_group_size_from_observed_rate() -> None:
    sampler = make_sampler("a", adaptive_group={"enabled": True, "target": 0.25}, difficulty={"prior_strength": 0})
    draw = sampler.sample(1)[0]
    assert draw.group_size == 4  # unseen: the run's group size
    sampler.observe(rollouts_for(draw.item, [1.0, 0.0, 1.0, 0.0]))
    assert sampler._group_size(draw.item) == 3  # p = 0.5


def test_hard_focus_draws_hardest_items_with_the_larger_group() -> None:
    hard = {"fraction": 0.5, "max_pass_rate": 0.25, "group_size": 12}
    sampler = make_sampler("a", stages=[{"name": "hard", "hard_focus": hard}], difficulty={"prior_strength": 0})
    draws = sampler.sample(4)
    outcomes = [[0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]]  # rates 0, 1, 0.25, 0.5
    for g, (draw, rewards) in enumerate(zip(draws, outcomes, strict=True)):
        sampler.observe(rollouts_for(draw.item, [float(r) for r in rewards], group=g))
    assert {i.id for i in sampler.hard_pool(sampler.schedule.current.hard_focus)} == {"a/0", "a/2"}
    nxt = sampler.sample(4)
    assert sorted(d.item.id for d in nxt if d.hard) == ["a/0", "a/2"]
    assert [d.group_size for d in nxt] == [12, 12, 4, 4]
    assert [d.item.id for d in nxt if not d.hard] == ["a/4", "a/5"]


def test_stage_moves_by_steps_then_by_metric() -> None:
    schedule = StageSchedule(
        [
            StageConfig(name="warm", steps=2),
            StageConfig(name="grow", until="task/a/accuracy >= 0.8"),
            StageConfig(name="last"),
        ]
    )
    assert [schedule.end_step({}) for _ in range(2)] == [False, True]
    assert not schedule.end_step({"task/a/accuracy": 0.79})
    assert schedule.end_step({"task/a/accuracy": 0.8})
    assert schedule.current.name == "last" and not schedule.end_step({"task/a/accuracy": 1.0})


def test_condition_with_missing_metric_is_not_met() -> None:
    assert not condition_met("reward/mean > 0", {})
    assert condition_met("reward/mean < 1e-3", {"reward/mean": 0.0})


def test_stage_restricts_tasks_and_sets_max_new_tokens() -> None:
    stages = [{"name": "easy", "steps": 1, "tasks": ["a"], "max_new_tokens": 4}, {"name": "all", "group_size": 6}]
    sampler = make_sampler("a", "b", stages=stages, sampling="balanced")
    assert set(tasks_of(sampler.sample(4))) == {"a"} and sampler.params().max_new_tokens == 4
    sampler.end_step({})
    draws = sampler.sample(4)
    assert tasks_of(draws).count("b") == 2 and sampler.params().max_new_tokens == 8
    assert {d.group_size for d in draws} == {6}
    assert sampler.metrics()["data/stage"] == 1.0


def test_unknown_stage_task_is_a_config_error() -> None:
    with pytest.raises(ValueError, match=r"stages.0.tasks: unknown task\(s\) \['c'\]"):
        make_sampler("a", stages=[{"name": "s", "tasks": ["c"]}])


def test_relift_queues_all_failed_items_once_and_releases_them_every_k_steps() -> None:
    sampler = make_sampler("a", relift={"enabled": True, "every": 2, "batch_size": 1}, reference_field="answer")
    items = [d.item for d in sampler.sample(3)]
    sampler.observe(rollouts_for(items[0], [0.0, 0.0]))
    sampler.observe(rollouts_for(items[0], [0.0, 0.0]))  # queued once
    sampler.observe(rollouts_for(items[1], [0.0, 1.0]))  # solved once: not queued
    sampler.observe(rollouts_for(items[2], [0.0, 0.0]))
    assert sampler.metrics()["data/relift_queue"] == 2.0
    assert sampler.demonstrations() == []  # step 1 of every 2
    sampler.end_step({})
    [(recipe, demos)] = sampler.demonstrations()
    assert recipe == "relift" and [(d.item.id, d.text) for d in demos] == [("a/0", "<answer>1</answer>")]
    sampler.end_step({})
    sampler.end_step({})
    assert [d.item.id for _, demos in sampler.demonstrations() for d in demos] == ["a/2"]


def test_relift_skips_items_without_a_reference() -> None:
    sampler = make_sampler("a", relift={"enabled": True})  # reference_field 'solution' is absent
    sampler.observe(rollouts_for(sampler.sample(1)[0].item, [0.0, 0.0]))
    assert sampler.metrics()["data/relift_queue"] == 0.0


def test_resume_from_state_dict_continues_the_same_sequence() -> None:
    settings = {
        "stages": [{"name": "s0", "steps": 2}, {"name": "hard", "hard_focus": {"max_pass_rate": 1.0}}],
        "adaptive_group": {"enabled": True},
        "relift": {"enabled": True, "every": 1},
        "expert_iteration": {"enabled": True, "every": 2, "max_pass_rate": 0.5},
        "reference_field": "answer",
    }

    def play(sampler, steps: int) -> list[tuple[str, int]]:
        seen = []
        for step in range(steps):
            for g, draw in enumerate(sampler.sample(3)):
                seen.append((draw.item.id, draw.group_size))
                sampler.observe(rollouts_for(draw.item, [float((step + g) % 2), 0.0], group=g))
            seen += [(d.item.id, -1) for _, demos in sampler.demonstrations() for d in demos]
            sampler.end_step({})
        return seen

    first = make_sampler("a", "b", **settings)
    play(first, 3)
    state = first.state_dict()
    expected = play(first, 3)
    resumed = make_sampler("a", "b", **settings)
    resumed.load_state_dict(state)
    assert play(resumed, 3) == expected
    assert resumed.state_dict()["rates"] == first.state_dict()["rates"]


def test_sampler_needs_a_source_per_task() -> None:
    sources = [CountingSource("a")]
    with pytest.raises(ValueError, match="one source per entry"):
        Sampler(sources, data_config("a", "b"), SamplingParams(4, n=2), held_out=set(), seed=0)


def test_a_task_whose_prompts_are_all_held_out_is_an_error_not_an_endless_search() -> None:
    """The guessing game's bug: every item had the same prompt, which was also a held-out prompt."""
    from verity.run.base import _fresh_items
    from verity.schema import ConfigError

    class SamePrompt:
        name = "guess"

        def train_item(self, index: int) -> Item:
            return Item(f"guess/train/{index}", "guess", "Guess my number.", str(index % 16))

    with pytest.raises(
        ConfigError, match=r"task 'guess': 10000 training items in a row have the prompt of a held"
    ):
        next(_fresh_items([SamePrompt()], {"Guess my number."}, start=0))
    sampler = Sampler(
        [SamePrompt()], data_config("guess"), SamplingParams(4, n=2), held_out={"Guess my number."}, seed=0
    )
    with pytest.raises(ConfigError, match=r"give each item a distinct prompt"):
        sampler.sample(1)
