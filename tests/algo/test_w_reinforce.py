"""W-REINFORCE as published (+lambda for a correct sample, -1 for a wrong one, no baseline), beside the positive
scaling of another estimator's advantages that is not it."""

import pytest
import torch
from pydantic import ValidationError
from torch.testing import assert_close

from verity.algo.config import AlgoConfig
from verity.algo.objective import compute_advantages
from verity.algo.w_reinforce import w_reinforce_advantages
from verity.config import load_config
from verity.schema import ConfigError


def advantages(cfg: AlgoConfig, rewards: list[float]) -> torch.Tensor:
    n = len(rewards)
    adv = compute_advantages(cfg, torch.tensor(rewards), torch.zeros(n, dtype=torch.long), torch.ones(n, 2))
    return adv[:, 0]


def test_w_reinforce_is_plus_lambda_and_minus_one_without_a_baseline() -> None:
    cfg = load_config({}, ["algo.advantage=w_reinforce", "algo.w_reinforce_lambda=0.1"]).algo
    assert_close(advantages(cfg, [1.0, 0.0, 0.0, 0.0]), torch.tensor([0.1, -1.0, -1.0, -1.0]))
    assert_close(advantages(cfg, [0.0, 0.0, 0.0, 0.0]), torch.tensor([-1.0, -1.0, -1.0, -1.0]))  # no baseline
    assert_close(advantages(cfg, [1.0, 1.0]), torch.tensor([0.1, 0.1]))
    # correct = above algo.correct_threshold (0.5 by default): 0.7 counts, 0.5 does not.
    assert_close(advantages(cfg, [0.7, 0.5]), torch.tensor([0.1, -1.0]))
    assert load_config({}, ["algo.advantage=w_reinforce"]).algo.estimator_settings.w_reinforce_lambda == 0.1


def test_w_reinforce_keeps_the_input_dtype() -> None:
    correct = torch.tensor([1.0, 0.0], dtype=torch.float64)
    out = w_reinforce_advantages(correct, 0.3)
    assert out.dtype == torch.float64 and out.tolist() == [0.3, -1.0]


def test_positive_scale_scales_grpo_and_is_not_w_reinforce() -> None:
    # GRPO of [1, 0, 0, 0]: mean 1/4, unbiased std 1/2, so [1.5, -0.5, -0.5, -0.5]; scaled by 0.1 where positive.
    cfg = load_config({}, ["algo.positive_scale=0.1"]).algo
    assert_close(advantages(cfg, [1.0, 0.0, 0.0, 0.0]), torch.tensor([0.15, -0.5, -0.5, -0.5]))
    assert_close(advantages(cfg, [0.0, 0.0, 0.0, 0.0]), torch.zeros(4))


def test_the_old_key_names_both_options() -> None:
    renamed = r"algo.positive_weight is now algo.positive_scale.*advantage=w_reinforce"
    with pytest.raises(ConfigError, match=renamed):
        load_config({}, ["algo.positive_weight=0.1"])


def test_lambda_is_a_setting_of_w_reinforce_only() -> None:
    owner = r"'algo.w_reinforce_lambda' is a setting of algo\.advantage=w_reinforce"
    with pytest.raises(ConfigError, match=owner):
        load_config({}, ["algo.w_reinforce_lambda=0.2"])
    with pytest.raises(ValidationError):
        AlgoConfig(advantage="w_reinforce", w_reinforce_lambda=-1.0)
    with pytest.raises(ConfigError, match="kl_in=loss"):
        load_config({}, ["algo.advantage=w_reinforce", "algo.kl_coef=0.1", "algo.kl_in=reward"])
