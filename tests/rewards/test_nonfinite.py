"""A non-finite reward is a counted, warned verifier failure before any estimator reads it."""

import math

import torch
from torch.testing import assert_close

from verity.algo.config import AlgoConfig
from verity.algo.objective import compute_advantages
from verity.data.samplers import Draw
from verity.rewards.compose import Component, ComposedReward, finite_score
from verity.run.checks import RewardWatch
from verity.step.collect import generate_groups
from verity.types import Completion, Item, Rollout, SamplingParams, Score


def nan_steps(completion: str, **fields: object) -> Score:
    return Score(1.0, steps=((3, 1.0), (6, math.nan)))


def test_a_nan_step_score_is_a_failure_with_zeroed_steps() -> None:
    reward = ComposedReward([Component("prm", f"{__name__}:nan_steps")])
    score = reward(Item("a", "p", "t"), "abcdef")
    assert (score.value, score.steps) == (0.0, ((3, 0.0), (6, 0.0)))
    assert score.reason is not None and score.reason.startswith("non-finite step scores")


def test_finite_scores_pass_unchanged() -> None:
    score = Score(0.5, reason=None, steps=((1, 0.25),))
    assert finite_score(score) is score
    assert finite_score(Score(math.inf)).value == 0.0


class NanRuntime:
    """A runtime whose workflow scored one sample NaN (as an environment's reward can be)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def rollout(self, items: list[Item], prompts: list[list[int]], params: SamplingParams) -> list[Rollout]:
        values = [1.0, math.nan, 0.0, 0.0]
        completion = Completion([1], [0.0], "x", "stop")
        return [Rollout(items[0], 0, [0], completion, Score(v)) for v in values]


def test_a_nan_reward_is_counted_and_warned_and_never_reaches_an_estimator() -> None:
    draw = Draw(Item("a", "p", "t"), 4)
    rollouts = generate_groups(NanRuntime(), lambda item: [0], [draw], SamplingParams(max_new_tokens=1))
    assert [r.reward for r in rollouts] == [1.0, 0.0, 0.0, 0.0]
    assert rollouts[1].score.reason.startswith("non-finite reward nan")
    watch = RewardWatch(10.0)
    warnings = watch.observe(1, rollouts)
    assert watch.counts["failed"] == 1 and any("first reward failure" in w for w in warnings)
    # GRPO of [1, 0, 0, 0]: unbiased std 1/2, mean 1/4: a NaN would have made the whole group NaN.
    rewards = torch.tensor([r.reward for r in rollouts])
    adv = compute_advantages(AlgoConfig(), rewards, torch.zeros(4, dtype=torch.long), torch.ones(4, 1))[:, 0]
    assert_close(adv, torch.tensor([1.5, -0.5, -0.5, -0.5]), atol=1e-5, rtol=1e-5)
