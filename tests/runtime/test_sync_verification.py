"""Every sync of an engine with its own copy of the weights is verified on a probe: a sync that silently loses the
weights is a named error, not training on stale samples; an engine on the learner's module is not probed."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_llama

from verity.algo.config import AlgoConfig
from verity.algo.objective import PolicyObjective
from verity.rollout.hf import HFEngine
from verity.rollout.sync_check import StaleWeightsError
from verity.rollout.workflows.base import WorkflowSpec
from verity.rollout.workflows.single import SingleTurn
from verity.runtime.local import LocalRuntime
from verity.train.config import TrainConfig
from verity.train.learner import Learner


class NoScoring:
    def close(self) -> None:
        pass


def learner_and_copy(char_tokenizer, lose_weights: bool) -> tuple[Learner, HFEngine]:
    model = tiny_llama(char_tokenizer)
    learner = Learner(model, TrainConfig(), PolicyObjective(AlgoConfig()), temperature=1.0, seed=0)
    engine = HFEngine(copy.deepcopy(model), char_tokenizer)  # its own copy, as in a Ray rollout worker
    if lose_weights:
        engine.load_weights = lambda weights, version: setattr(engine, "version", version)  # type: ignore[method-assign]
    return learner, engine


def perturb(learner: Learner) -> None:

    torch.manual_seed(3)
    with torch.no_grad():
        for p in learner.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    learner.version += 1


def test_a_sync_that_loses_the_weights_is_caught(char_tokenizer) -> None:
    learner, engine = learner_and_copy(char_tokenizer, lose_weights=True)
    runtime = LocalRuntime(
        engine, NoScoring(), SingleTurn(WorkflowSpec(None, char_tokenizer)), sync_tolerance=1e-4
    )
    perturb(learner)
    with pytest.raises(StaleWeightsError, match=r"version 1 .* rollout\.sync_tolerance"):
        runtime.sync(learner)


def test_a_real_sync_passes_and_reports_its_gap(char_tokenizer) -> None:
    learner, engine = learner_and_copy(char_tokenizer, lose_weights=False)
    runtime = LocalRuntime(
        engine, NoScoring(), SingleTurn(WorkflowSpec(None, char_tokenizer)), sync_tolerance=1e-4
    )
    perturb(learner)
    runtime.sync(learner)
    assert engine.version == 1 and runtime.timings["sync/logprob_gap"] < 1e-5


def test_an_engine_on_the_learners_module_is_not_probed(char_tokenizer) -> None:
    learner, _ = learner_and_copy(char_tokenizer, lose_weights=False)
    engine = HFEngine(learner.model, char_tokenizer, shared=True)
    runtime = LocalRuntime(
        engine, NoScoring(), SingleTurn(WorkflowSpec(None, char_tokenizer)), sync_tolerance=1e-12
    )
    learner.probe_logprobs = None  # type: ignore[assignment]  # would fail if called
    perturb(learner)
    runtime.sync(learner)
    assert engine.version == 1 and "sync/logprob_gap" not in runtime.timings
