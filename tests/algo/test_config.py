import pytest
from pydantic import ValidationError

from verity.algo.config import AlgoConfig


def test_defaults_are_plain_grpo() -> None:
    cfg = AlgoConfig()
    assert (cfg.advantage, cfg.loss, cfg.aggregation) == ("grpo", "ppo_clip", "token_mean")
    assert (cfg.clip_low, cfg.clip_high, cfg.dual_clip, cfg.kl_coef, cfg.entropy_coef) == (0.2, 0.2, None, 0, 0)


def test_unknown_key_and_bad_values_are_named() -> None:
    with pytest.raises(ValidationError, match="clip_hgh"):
        AlgoConfig(clip_hgh=0.3)
    with pytest.raises(ValidationError, match="dual_clip"):
        AlgoConfig(dual_clip=0.5)
    with pytest.raises(ValidationError, match="entropy_target_low"):
        AlgoConfig(entropy_target_low=0.5)
    with pytest.raises(ValidationError, match="must be below"):
        AlgoConfig(entropy_target_low=0.5, entropy_target_high=0.4)


def test_every_field_is_documented() -> None:
    assert all(field.description for field in AlgoConfig.model_fields.values())
