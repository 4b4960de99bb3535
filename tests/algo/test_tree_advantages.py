"""Tree-GRPO step advantages on hand-computed values, directly and through the registered estimators."""

import pytest
import torch

from verity.algo.advantages import tree_advantages
from verity.algo.config import AlgoConfig
from verity.algo.objective import advantage_inputs, compute_advantages

# Rows 0 and 1 are one tree (group 0): outcomes +1 and -1, so mu = 0. Row 2 is a tree of its own (mu = +1).
STEP_VALUES = torch.tensor([[0.5, 1.0, 0.0], [0.2, -1.0, 0.0], [1.0, 0.0, 0.0]])
STEP_MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
TOKEN_STEPS = torch.tensor([[-1, 0, 1, 1], [-1, 0, 0, 1], [-1, 0, -1, -1]])
GROUPS = torch.tensor([0, 0, 1])
RESPONSE = (TOKEN_STEPS >= 0).float()


def test_step_value_minus_the_tree_mean_outcome() -> None:
    adv = tree_advantages(STEP_VALUES, STEP_MASK, TOKEN_STEPS, GROUPS)
    expected = torch.tensor([[0.0, 0.5, 1.0, 1.0], [0.0, 0.2, 0.2, -1.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(adv, expected)


def test_mean_shift_uses_the_outcomes_of_each_tree() -> None:
    values = STEP_VALUES.clone()
    values[1, 1] = 1.0  # both paths of tree 0 correct: mu = 1
    adv = tree_advantages(values, STEP_MASK, TOKEN_STEPS, GROUPS)
    torch.testing.assert_close(adv[0], torch.tensor([0.0, -0.5, 0.0, 0.0]))
    torch.testing.assert_close(adv[1], torch.tensor([0.0, -0.8, -0.8, 0.0]))


def test_without_the_mean_each_step_keeps_its_backed_up_value() -> None:
    adv = tree_advantages(STEP_VALUES, STEP_MASK, TOKEN_STEPS, GROUPS, subtract_mean=False)
    torch.testing.assert_close(adv[2], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(adv[1], torch.tensor([0.0, 0.2, 0.2, -1.0]))


@pytest.mark.parametrize(("name", "subtract_mean"), [("tree_grpo", True), ("tree_q", False)])
def test_registered_estimators_read_the_step_values_from_turns(name: str, subtract_mean: bool) -> None:
    cfg = AlgoConfig(advantage=name)
    assert advantage_inputs(cfg) == {"turns"}
    rewards = torch.tensor([1.0, 0.0, 1.0])
    adv = compute_advantages(cfg, rewards, GROUPS, RESPONSE, turns=(STEP_VALUES, STEP_MASK, TOKEN_STEPS))
    expected = tree_advantages(STEP_VALUES, STEP_MASK, TOKEN_STEPS, GROUPS, subtract_mean)
    torch.testing.assert_close(adv, expected)
    with pytest.raises(ValueError, match=f"algo.advantage={name} needs turns"):
        compute_advantages(cfg, rewards, GROUPS, RESPONSE)
