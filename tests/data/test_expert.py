"""Expert iteration (BFS-Prover-V2): the problem-level difficulty rule, the adaptive NLL window on hand-computed
values, what the demonstration queues take, and one filtered SFT round with a recording learner."""

from __future__ import annotations

import pytest
import torch
from helpers.data_fakes import make_sampler, rollouts_for

from verity.data.config import DataConfig, ExpertIterationConfig
from verity.data.demos import DemoBank, Demonstration, too_easy
from verity.model.tokenizer import build_char_tokenizer
from verity.step.guidance import demonstration_updates, expert_update, nll_window, sequence_nll
from verity.types import Item


def test_too_easy_is_a_pass_rate_above_the_cap() -> None:
    assert too_easy(4, 4, 0.75)  # 1.0 > 0.75: always solved
    assert not too_easy(3, 4, 0.75)  # 0.75 is kept (at the cap)
    assert too_easy(13, 16, 0.75)  # 0.8125
    assert not too_easy(1, 16, 0.1)


def test_sequence_nll_is_the_token_mean_over_the_mask() -> None:
    logprobs = torch.tensor([[-9.0, -1.0, -3.0], [-5.0, -2.0, 0.0]])  # (2, 3); column 0 is prompt
    mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    assert sequence_nll(logprobs, mask).tolist() == [2.0, 2.0]


def test_nll_window_keeps_the_samples_between_two_quantiles() -> None:
    nll = torch.tensor([5.0, 1.0, 3.0, 2.0, 4.0])
    # Sorted 1..5: Q(0.25) = 2, Q(0.75) = 4 (linear interpolation at positions 1 and 3).
    assert nll_window(nll, 0.25, 0.75).tolist() == [False, False, True, True, True]
    # Q(0.1) = 1 + 0.4 * 1 = 1.4, Q(0.9) = 4 + 0.6 * 1 = 4.6: the two tails go.
    assert nll_window(nll, 0.1, 0.9).tolist() == [False, False, True, True, True]
    # Q(0) = 1, Q(0.5) = 3: the easier half is kept.
    assert nll_window(nll, 0.0, 0.5).tolist() == [False, True, True, True, False]
    # Two samples, Q(0.4) = 4, Q(0.6) = 6: the window can be empty.
    assert nll_window(torch.tensor([0.0, 10.0]), 0.4, 0.6).tolist() == [False, False]


def test_the_window_moves_with_the_policy() -> None:
    """The same samples, scored by a policy that improved uniformly, keep the same relative window: the bounds are
    quantiles of the current NLLs, not fixed numbers."""
    before = torch.tensor([2.0, 4.0, 6.0, 8.0, 10.0])  # Q(0.25) = 4, Q(0.75) = 8
    after = before / 2  # Q(0.25) = 2, Q(0.75) = 4
    assert nll_window(before, 0.25, 0.75).tolist() == [False, True, True, True, False]
    assert nll_window(after, 0.25, 0.75).tolist() == [False, True, True, True, False]
    # Bounds fixed at the first round's [4, 8] would now keep only the two highest NLLs.
    assert ((after >= 4.0) & (after <= 8.0)).tolist() == [False, False, False, True, True]


def bank(**settings: object) -> DemoBank:
    data = DataConfig.model_validate({"reference_field": "answer", **settings})
    return DemoBank(data, threshold=1.0)


def texts(rollouts, texts_by_reward):
    for r, text in zip(rollouts, texts_by_reward, strict=True):
        r.completion.text = text
    return rollouts


def test_expert_queue_takes_distinct_successes_of_hard_but_solved_items_only() -> None:
    demos = bank(expert_iteration={"enabled": True, "max_pass_rate": 0.5}, relift={"enabled": True})
    hard = texts(rollouts_for(Item("h", "t", "p", "7"), [1.0, 0.0, 1.0, 0.0]), ["a", "b", "a", "c"])
    easy = texts(rollouts_for(Item("e", "t", "p", "7"), [1.0, 1.0, 1.0, 0.0]), ["a", "a", "d", "x"])
    failed = rollouts_for(Item("f", "t", "p", "7"), [0.0, 0.0])
    demos.observe([hard, easy, failed])
    queued = demos.queues["expert_iteration"].items
    assert [(d.item.id, d.text) for d in queued] == [("h", "a")]  # 2/4 <= 0.5; 'a' once; easy 3/4 > 0.5
    assert [(d.item.id, d.text) for d in demos.queues["relift"].items] == [("f", "<answer>7</answer>")]
    assert demos.metrics() == {"data/relift_queue": 1.0, "data/expert_iteration_queue": 1.0}


def test_expert_round_takes_the_whole_queue_every_k_steps() -> None:
    sampler = make_sampler("a", expert_iteration={"enabled": True, "every": 2, "max_pass_rate": 1.0})
    items = [d.item for d in sampler.sample(3)]
    for i, it in enumerate(items):
        sampler.observe(texts(rollouts_for(it, [1.0, 0.0]), [f"s{i}", "w"]))
    assert sampler.demonstrations() == []
    sampler.end_step({})
    [(recipe, demos)] = sampler.demonstrations()
    assert recipe == "expert_iteration" and [d.text for d in demos] == ["s0", "s1", "s2"]
    assert sampler.metrics()["data/expert_iteration_queue"] == 0.0


class RecordingLearner:
    """Teacher-forced log-probs of -k per completion token for the k-th row; records each SFT step's rows."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def logprobs(self, batch) -> torch.Tensor:
        rows = torch.arange(1, len(batch) + 1, dtype=torch.float32)[:, None]  # (B, 1)
        return -rows * batch.loss_mask

    def sft_step(self, batch, lr_scale: float) -> float:
        self.steps.append(len(batch))
        return 0.5 * lr_scale


def test_expert_round_filters_by_the_nll_window_and_trains_in_batches() -> None:
    tokenizer = build_char_tokenizer()
    demos = [Demonstration(Item(f"i{k}", "t", "p"), f"<answer>{k}</answer>") for k in range(10)]
    learner = RecordingLearner()
    cfg = ExpertIterationConfig(enabled=True, low_quantile=0.2, high_quantile=0.7, batch_size=3, lr_scale=2.0)
    metrics = expert_update(learner, tokenizer, lambda it: [1, 2], demos, cfg)
    # NLLs 1..10; Q(0.2) = 1 + 0.2 * 9 = 2.8, Q(0.7) = 1 + 0.7 * 9 = 7.3: NLLs 3..7 (five rows) are kept.
    assert learner.steps == [3, 2]
    assert metrics == {
        "expert_iteration/candidates": 10.0,
        "expert_iteration/items": 5.0,
        "expert_iteration/loss": pytest.approx(1.0),
        "expert_iteration/nll_low": pytest.approx(3.0),
        "expert_iteration/nll_high": pytest.approx(7.0),
    }


def test_rounds_dispatch_per_recipe() -> None:
    tokenizer = build_char_tokenizer()
    data = DataConfig.model_validate({"rethink": {"enabled": True, "lr_scale": 0.5}})
    learner = RecordingLearner()
    demos = [Demonstration(Item("i", "t", "p"), "<answer>1</answer>")] * 2
    metrics = demonstration_updates(learner, tokenizer, lambda it: [1, 2], data, [("rethink", demos)])
    assert metrics == {"rethink/loss": 0.25, "rethink/items": 2.0} and learner.steps == [2]
