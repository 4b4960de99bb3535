"""The learner: teacher-forced log-probs, the sign of the policy update, gradient accumulation equivalence and
the learning-rate warm-up."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import encode, tiny_llama

from verity.algo.config import AlgoConfig
from verity.algo.objective import PolicyObjective
from verity.model.modeling import token_logprobs
from verity.train.batching import collate
from verity.train.config import TrainConfig
from verity.train.learner import Learner, lr_factor
from verity.types import Completion, Item, Rollout

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [("<|user|>1+2<|assistant|>", "3"), ("<|user|>hi<|assistant|>", "hello"), ("ab", "cdefg"), ("x", "yz")]


def make_batch(tokenizer, advantages: list[float] | None = None):
    rollouts = []
    for g, (prompt, answer) in enumerate(TEXTS):
        ids = encode(tokenizer, answer)
        completion = Completion(ids, [0.0] * len(ids), answer, "length")
        rollouts.append(Rollout(Item(str(g), "t", prompt), g, encode(tokenizer, prompt), completion))
    batch = collate(rollouts, tokenizer.pad_token_id)
    if advantages is not None:
        batch.advantages = torch.tensor(advantages)[:, None] * batch.loss_mask
    return batch


def test_token_logprobs_equal_unpadded_forward(char_tokenizer) -> None:
    model = tiny_llama(char_tokenizer)
    batch = make_batch(char_tokenizer)
    with torch.no_grad():
        logprobs, entropy = token_logprobs(model, batch, temperature=0.5, with_entropy=True)
    for row in range(len(batch)):
        length = int(batch.attention_mask[row].sum())
        ids = batch.input_ids[row, :length]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids[None]).logits[0] / 0.5, dim=-1)  # (L, V)
        expected = logp[:-1].gather(-1, ids[1:, None]).squeeze(-1)
        torch.testing.assert_close(logprobs[row, 1:length], expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(entropy[row, 1:length], -(logp.exp() * logp).sum(-1)[:-1], atol=1e-5, rtol=0)
        assert logprobs[row, 0] == 0


def completion_logprob(model, batch) -> torch.Tensor:
    with torch.no_grad():
        lp, _ = token_logprobs(model, batch, 1.0)
    return (lp * batch.loss_mask).sum(-1)  # (B,)


def fresh_learner(tokenizer, **train: object) -> Learner:
    cfg = TrainConfig(lr=1e-2, **train)
    return Learner(tiny_llama(tokenizer), cfg, PolicyObjective(AlgoConfig()), temperature=1.0, seed=0)


def on_policy(learner: Learner, batch):
    """Behaviour log-probs equal to the current policy's, as the engine would have returned them."""
    batch.old_logprobs = learner.logprobs(batch) * batch.loss_mask
    return batch


def test_positive_advantage_raises_and_negative_lowers_log_prob(char_tokenizer) -> None:
    learner = fresh_learner(char_tokenizer)
    batch = on_policy(learner, make_batch(char_tokenizer, [1.0, -1.0, 1.0, -1.0]))
    before = completion_logprob(learner.model, batch)
    metrics = learner.step(batch)
    after = completion_logprob(learner.model, batch)
    assert metrics["skipped"] == 0.0 and learner.version == 1
    assert (after - before)[[0, 2]].min() > 0 and (after - before)[[1, 3]].max() < 0


def test_zero_advantages_leave_the_policy_unchanged(char_tokenizer) -> None:
    learner = fresh_learner(char_tokenizer)
    initial = copy.deepcopy(learner.model.state_dict())
    learner.step(on_policy(learner, make_batch(char_tokenizer, [0.0] * 4)))
    for name, tensor in learner.model.state_dict().items():
        assert torch.equal(tensor, initial[name]), name


def test_micro_batches_accumulate_to_the_full_batch_gradient(char_tokenizer) -> None:
    """Compared through AdamW's first moment, (1 - beta1) * gradient: the parameters themselves are no witness,
    since Adam's first step moves each by about lr * sign(gradient), and near-zero gradients flip sign on
    rounding."""
    batch = make_batch(char_tokenizer, [1.0, -0.5, 0.25, -2.0])
    whole, split = fresh_learner(char_tokenizer), fresh_learner(char_tokenizer, micro_batch_size=1)
    m_whole = whole.step(on_policy(whole, batch))
    m_split = split.step(on_policy(split, batch))
    assert m_whole["grad_norm"] > 0
    assert m_whole["grad_norm"] == pytest.approx(m_split["grad_norm"], rel=1e-4)
    pairs = zip(whole.model.parameters(), split.model.parameters(), strict=True)
    for a, b in pairs:
        torch.testing.assert_close(
            whole.optimizer.state[a]["exp_avg"], split.optimizer.state[b]["exp_avg"], atol=1e-7, rtol=1e-4
        )


def test_learning_rate_warm_up(char_tokenizer) -> None:
    learner = fresh_learner(char_tokenizer, warmup_steps=4)
    batch = make_batch(char_tokenizer, [1.0, -1.0, 1.0, -1.0])
    lrs = [learner.step(on_policy(learner, batch))["lr"] for _ in range(5)]
    assert lrs == pytest.approx([1e-2 * f for f in (2 / 4, 3 / 4, 1.0, 1.0, 1.0)])


def test_epochs_times_mini_batches_optimizer_steps(char_tokenizer) -> None:
    learner = fresh_learner(char_tokenizer, warmup_steps=8, epochs=2, mini_batches=2)
    metrics = learner.step(on_policy(learner, make_batch(char_tokenizer, [1.0, -1.0, 1.0, -1.0])))
    assert metrics["lr"] == pytest.approx(1e-2 * 5 / 8)  # four optimizer steps taken
    assert learner.version == 1


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean", "constant"])
def test_zero_advantage_rows_are_left_out_with_the_same_gradient(char_tokenizer, aggregation: str) -> None:
    algo = AlgoConfig(aggregation=aggregation)
    batch = make_batch(char_tokenizer, [1.0, 0.0, -0.5, 0.0])
    learners = {}
    for skip in (True, False):
        cfg = TrainConfig(lr=1e-2, skip_zero_advantage=skip)
        learners[skip] = Learner(tiny_llama(char_tokenizer), cfg, PolicyObjective(algo), temperature=1.0, seed=0)
    metrics = {skip: learner.step(on_policy(learner, batch)) for skip, learner in learners.items()}
    assert metrics[True]["rows_skipped"] == 0.5 and metrics[False]["rows_skipped"] == 0.0
    assert metrics[True]["grad_norm"] > 0
    assert metrics[True]["grad_norm"] == pytest.approx(metrics[False]["grad_norm"], rel=1e-5)
    assert metrics[True]["loss/policy"] == pytest.approx(metrics[False]["loss/policy"], abs=1e-7)
    pairs = zip(learners[True].model.parameters(), learners[False].model.parameters(), strict=True)
    for a, b in pairs:
        torch.testing.assert_close(
            learners[True].optimizer.state[a]["exp_avg"],
            learners[False].optimizer.state[b]["exp_avg"],
            atol=1e-7,
            rtol=1e-4,
        )


def test_rows_stay_when_an_entropy_term_or_kl_reads_them(char_tokenizer) -> None:
    batch = make_batch(char_tokenizer, [1.0, 0.0, -0.5, 0.0])
    bonus = Learner(
        tiny_llama(char_tokenizer),
        TrainConfig(),
        PolicyObjective(AlgoConfig(entropy_coef=0.01)),
        temperature=1.0,
        seed=0,
    )
    assert bonus.step(on_policy(bonus, batch))["rows_skipped"] == 0.0
    plain = fresh_learner(char_tokenizer)
    batch = on_policy(plain, batch)
    batch.ref_logprobs = batch.old_logprobs.clone()
    assert plain.step(batch)["rows_skipped"] == 0.0


def test_an_all_zero_step_still_applies_adamw_momentum_and_decay(char_tokenizer) -> None:
    """After one real update, a batch with no signal moves the weights by AdamW's momentum and weight decay
    exactly as a backward pass of zeros would, whether or not its rows are skipped."""
    models = {}
    for skip in (True, False):
        learner = fresh_learner(char_tokenizer, weight_decay=0.1, skip_zero_advantage=skip)
        learner.step(on_policy(learner, make_batch(char_tokenizer, [1.0, -1.0, 1.0, -1.0])))
        before = copy.deepcopy(learner.model.state_dict())
        metrics = learner.step(on_policy(learner, make_batch(char_tokenizer, [0.0] * 4)))
        assert metrics["rows_skipped"] == (1.0 if skip else 0.0) and metrics["grad_norm"] == 0.0
        assert any(not torch.equal(t, before[n]) for n, t in learner.model.state_dict().items())
        models[skip] = learner.model.state_dict()
    for name, tensor in models[True].items():
        torch.testing.assert_close(tensor, models[False][name], atol=1e-7, rtol=0)


def test_lr_factor_schedules() -> None:
    assert [lr_factor(s, 4, 10, "constant") for s in (0, 1, 3, 9)] == [0.25, 0.5, 1.0, 1.0]
    assert [lr_factor(s, 0, 5, "linear") for s in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert [lr_factor(s, 0, 3, "cosine") for s in range(3)] == pytest.approx([1.0, 0.5, 0.0])
    assert [lr_factor(s, 2, 5, "cosine", 0.1) for s in range(5)] == pytest.approx([0.5, 1.0, 1.0, 0.55, 0.1])


def test_learner_follows_the_decay_over_all_optimizer_steps(char_tokenizer) -> None:
    learner = fresh_learner(char_tokenizer, steps=2, mini_batches=2, lr_schedule="linear")
    batch = make_batch(char_tokenizer, [1.0, -1.0, 1.0, -1.0])
    lrs = [learner.step(on_policy(learner, batch))["lr"] for _ in range(2)]
    # 4 optimizer steps in all; "lr" is read after each RL step's two updates
    assert lrs == pytest.approx([1e-2 / 3, 0.0])
