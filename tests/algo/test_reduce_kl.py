import math

import pytest
import torch

from verity.algo.kl import kl_estimate
from verity.algo.reduce import aggregate, masked_mean, masked_whiten

LOSSES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token_mean", (1 + 2 + 4 + 5 + 6) / 5),
        ("seq_mean_token_mean", (1.5 + 5.0) / 2),
        ("seq_mean_token_sum", (3 + 15) / 2),
        ("constant", (3 + 15) / (2 * 10)),
    ],
)
def test_aggregate_hand_computed(mode: str, expected: float) -> None:
    value = aggregate(LOSSES, MASK, mode, token_normalizer=5, seq_normalizer=2, constant_normalizer=10)
    assert value.item() == pytest.approx(expected)


def test_masked_positions_never_matter_even_nan() -> None:
    poisoned = LOSSES.clone()
    poisoned[0, 2] = float("nan")
    for mode in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant"):
        clean = aggregate(LOSSES, MASK, mode, token_normalizer=5, seq_normalizer=2)
        dirty = aggregate(poisoned, MASK, mode, token_normalizer=5, seq_normalizer=2)
        assert dirty.item() == pytest.approx(clean.item())


def test_aggregate_rejects_bad_mode_and_normalizer() -> None:
    with pytest.raises(ValueError, match="unknown aggregation 'mean'"):
        aggregate(LOSSES, MASK, "mean", token_normalizer=1, seq_normalizer=1)
    with pytest.raises(ValueError, match="token_normalizer=0"):
        aggregate(LOSSES, MASK, "token_mean", token_normalizer=0, seq_normalizer=1)


def test_masked_mean_and_whiten() -> None:
    assert masked_mean(LOSSES, MASK).item() == pytest.approx(18 / 5)
    white = masked_whiten(LOSSES, MASK)
    assert white[0, 2].item() == 0.0
    assert masked_mean(white, MASK).item() == pytest.approx(0.0, abs=1e-6)


def test_kl_estimators_hand_computed() -> None:
    logp = torch.tensor([math.log(0.5)])
    ref = torch.tensor([math.log(0.25)])
    # log r = log(pi_ref / pi) = log 0.5
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(math.log(2))
    assert kl_estimate(logp, ref, "k2").item() == pytest.approx(0.5 * math.log(2) ** 2)
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(0.5 - 1 + math.log(2))
    assert kl_estimate(logp, logp, "k3").item() == 0.0
    with pytest.raises(ValueError, match="unknown KL estimator 'k4'"):
        kl_estimate(logp, ref, "k4")
