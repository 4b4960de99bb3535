import pytest
from pydantic import ValidationError

from verity.algo.config import AlgoConfig
from verity.config import load_config
from verity.schema import ConfigError


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


def test_settings_that_would_silently_do_nothing_are_refused() -> None:
    # the adaptive controller multiplies the coefficient, so from 0 it would stay at 0
    with pytest.raises(ValidationError, match=r"algo\.kl_coef"):
        AlgoConfig(kl_target=0.01)
    with pytest.raises(ValidationError, match="entropy_target_low"):
        AlgoConfig(entropy_control="mask")
    band = {"entropy_target_low": 0.1, "entropy_target_high": 0.2}
    AlgoConfig(kl_coef=0.05, kl_target=0.01, entropy_control="mask", **band)


def test_every_field_is_documented() -> None:
    assert all(field.description for field in AlgoConfig.model_fields.values())


def test_gspo_defaults_to_the_sequence_mean() -> None:
    assert AlgoConfig(loss="gspo").aggregation == "seq_mean_token_mean"
    assert AlgoConfig(loss="gspo", aggregation="seq_mean_token_mean").aggregation == "seq_mean_token_mean"
    assert AlgoConfig(loss="ppo_clip").aggregation == "token_mean"  # other losses keep the default
    assert load_config(overrides=["algo.loss=gspo"]).algo.aggregation == "seq_mean_token_mean"
    gspo = AlgoConfig(loss="gspo", clip_low=3e-4)
    assert AlgoConfig.model_validate(gspo.model_dump()) == gspo  # a saved config loads back


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_sum", "constant"])
def test_gspo_refuses_a_length_weighted_aggregation(aggregation: str) -> None:
    with pytest.raises(ValidationError, match=f"aggregation={aggregation} weights each sequence by its length"):
        AlgoConfig(loss="gspo", aggregation=aggregation)
    with pytest.raises(ConfigError, match="set it to seq_mean_token_mean"):
        load_config(overrides=["algo.loss=gspo", f"algo.aggregation={aggregation}"])


@pytest.mark.parametrize(
    ("setting", "readers"),
    [
        ("algo.gamma=0.9", "['gae', 'reinforce_pp', 'reinforce_pp_baseline', 'trloo']"),
        ("algo.gae_lambda=0.5", "['gae']"),
        ("algo.gae_whiten=false", "['gae']"),
        ("algo.correct_threshold=0.9", "['pass_k', 'w_reinforce'] or by algo.long2short_coef"),
    ],
)
def test_a_shared_key_the_estimator_would_ignore_is_refused(setting: str, readers: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({}, ["algo.advantage=rloo", setting])
    key = setting.split("=")[0]
    assert f"{key}=" in str(info.value) and f"read by algo.advantage in {readers}" in str(info.value)
    assert "not by algo.advantage=rloo" in str(info.value)


def test_a_shared_key_is_accepted_where_it_is_read() -> None:
    assert load_config({}, ["algo.advantage=trloo", "algo.gamma=0.9"]).algo.gamma == 0.9
    assert load_config({}, ["algo.advantage=gae", "algo.gae_whiten=false"]).algo.gae_whiten is False
    long2short = load_config({}, ["algo.long2short_coef=0.5", "algo.correct_threshold=0.9"])
    assert long2short.algo.correct_threshold == 0.9
