import pytest

from verity.algo.config import AlgoConfig
from verity.algo.control import AdaptiveKLController, EntropyController
from verity.algo.state import AlgoState


def test_adaptive_kl_moves_toward_target_with_clipped_error() -> None:
    ctl = AdaptiveKLController(0.1, target=0.05, horizon=100)
    assert ctl.update(kl=1.0, n_samples=10) == pytest.approx(0.1 * (1 + 0.2 * 0.1))  # error clipped at +0.2
    ctl = AdaptiveKLController(0.1, target=0.05, horizon=100)
    assert ctl.update(kl=0.04, n_samples=10) == pytest.approx(0.1 * (1 - 0.2 * 0.1))
    fixed = AdaptiveKLController(0.1)
    assert fixed.update(kl=5.0, n_samples=10) == 0.1


def test_entropy_controller_coef_mode_stays_in_bounds() -> None:
    ctl = EntropyController(0.0, low=0.5, high=1.0, step=0.01, max_coef=0.015)
    ctl.update(0.2)
    assert ctl.coef == pytest.approx(0.01)
    ctl.update(0.2)
    assert ctl.coef == pytest.approx(0.015)  # capped
    ctl.update(0.7)
    assert ctl.coef == pytest.approx(0.015)  # inside the band: unchanged
    ctl.update(2.0)
    ctl.update(2.0)
    assert ctl.coef == pytest.approx(0.0)  # never negative


def test_entropy_controller_mask_mode_has_hysteresis() -> None:
    ctl = EntropyController(0.0, low=0.5, high=1.0, mode="mask")
    ctl.update(1.5)
    assert ctl.negative_weight == 0.0
    ctl.update(0.7)
    assert ctl.negative_weight == 0.0  # still inside the band: the last decision holds
    ctl.update(0.3)
    assert ctl.negative_weight == 1.0


def test_algo_state_round_trips_through_state_dict() -> None:
    cfg = AlgoConfig(kl_coef=0.1, kl_target=0.01, entropy_target_low=0.1, entropy_target_high=0.2)
    state = AlgoState(cfg)
    metrics = state.update({"kl": 1.0, "entropy": 0.05}, n_samples=100)
    assert metrics["algo/entropy_coef"] == pytest.approx(cfg.entropy_coef_step)
    restored = AlgoState(cfg)
    restored.load_state_dict(state.state_dict())
    assert restored.loss_kwargs() == state.loss_kwargs()
