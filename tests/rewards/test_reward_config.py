import pytest
from pydantic import ValidationError

from verity.rewards.compose import Component
from verity.rewards.config import RewardConfig


def test_default_is_accuracy_alone() -> None:
    cfg = RewardConfig()
    assert cfg.components() == [Component("accuracy", "accuracy", 1.0, {}, None, 1.0)]


def test_string_shorthand_and_gate() -> None:
    cfg = RewardConfig.model_validate(
        {"verifiers": ["format", {"name": "accuracy", "weight": 2.0, "gate": "format"}]}
    )
    assert [c.label for c in cfg.components()] == ["format", "accuracy"]
    assert cfg.components()[1].gate == "format"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"verifiers": ["accuracy", "accuracy"]}, "appears twice"),
        ({"verifiers": [{"name": "accuracy", "gate": "format"}]}, "is not another component"),
        ({"verifiers": []}, "at least one verifier"),
        ({"verifiers": [{"name": "accuracy", "wieght": 2}]}, "wieght"),
        ({"worker": 3}, "worker"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"verifiers": [{"name": "accuracy", "weight": "nan"}]}, "finite"),
        ({"start_method": "fork"}, "start_method"),
    ],
)
def test_bad_config_names_the_problem(data: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RewardConfig.model_validate(data)
