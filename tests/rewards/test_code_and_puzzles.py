import pytest
import reasoning_gym

from verity.rewards.code import code_reward, same_value, split_assert
from verity.rewards.match import accuracy, numeric_match
from verity.rewards.puzzles import reasoning_gym_verifier

ADD_STDIO = [{"input": "1 2\n", "output": "3\n"}, {"input": "5 5\n", "output": "10"}]
RIGHT = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
HALF = "```python\na, b = map(int, input().split())\nprint(3)\n```"


def test_stdio_all_or_nothing_and_partial_credit() -> None:
    assert code_reward(RIGHT, tests=ADD_STDIO) == 1.0
    assert code_reward(HALF, tests=ADD_STDIO) == 0.0
    assert code_reward(HALF, tests=ADD_STDIO, partial_credit=True) == 0.5
    assert code_reward("no code", tests=ADD_STDIO) == 0.0
    assert code_reward(RIGHT, tests=[]) is None


def test_assert_style() -> None:
    tests = ["assert add(1, 2) == 3", "assert add(0.1, 0.2) == 0.3", "assert add([1], [2]) == [1, 2]"]
    assert code_reward("```python\ndef add(a, b):\n    return a + b\n```", tests=tests) == 1.0
    wrong = "```python\ndef add(a, b):\n    return a + b if isinstance(a, list) else 0\n```"
    assert code_reward(wrong, tests=tests, partial_credit=True) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("test", "message"),
    [
        ("add(1)", "assert <call> == <literal>"),
        ("assert add(1) < 2", "single '=='"),
        ("assert f() == g()", "literal"),
    ],
)
def test_unsupported_assert_forms(test: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_assert(test)


@pytest.mark.parametrize(
    ("got", "want", "same"),
    [
        (0.30000000000000004, 0.3, True),
        (1, 1.0, True),
        (True, 1, False),
        ([1, 2], (1, 2), False),
        ({"a": 1.0}, {"a": 1}, True),
        pytest.param(10**400, 1.5, False, id="int-beyond-the-float-range"),
        ([10**400], [float("inf")], False),
        ({"a": -(10**400)}, {"a": 0.0}, False),
    ],
)
def test_same_value(got: object, want: object, same: bool) -> None:
    assert same_value(got, want) is same


def test_a_value_beyond_the_float_range_fails_its_test_and_keeps_the_others() -> None:
    # f(1) returns 10**400 where 2.5 is expected: that test fails; the other two pass, so 2/3, not 0.
    solution = "```python\ndef f(x):\n    return 10**400 if x == 1 else x + 0.5\n```"
    tests = ["assert f(1) == 2.5", "assert f(2) == 2.5", "assert f(3) == 3.5"]
    assert code_reward(solution, tests=tests, partial_credit=True) == pytest.approx(2 / 3)


def test_numeric_match_of_an_answer_beyond_the_float_range_is_wrong_not_an_error() -> None:
    assert numeric_match("<answer>" + "1" + "0" * 400 + "/3</answer>", answer="3") == 0.0
    assert accuracy("<answer>1e400</answer>", answer="1e500") == 0.0


@pytest.mark.parametrize(
    "family", ["basic_arithmetic", "chain_sum", "leg_counting", "countdown", "propositional_logic"]
)
def test_reasoning_gym_families_by_their_own_scorer(family: str) -> None:
    dataset = reasoning_gym.create_dataset(family, size=3, seed=7)
    for entry in dataset:
        if entry["answer"] is None:  # propositional_logic: any valid conclusion is accepted by its scorer
            continue
        assert reasoning_gym_verifier(f"<answer>{entry['answer']}</answer>", rg_entry=entry) == 1.0
        assert reasoning_gym_verifier("<answer>@@@</answer>", rg_entry=entry) < 1.0


def test_countdown_scorer_checks_the_model_expression() -> None:
    entry = reasoning_gym.create_dataset("countdown", size=1, seed=7)[0]
    target, numbers = entry["metadata"]["target"], entry["metadata"]["numbers"]
    reference = entry["answer"]
    assert reasoning_gym_verifier(f"<answer>{reference}</answer>", rg_entry=entry) == 1.0
    # A different expression reaching the target with the same numbers also scores: the scorer evaluates it.
    swapped = "+".join(str(n) for n in numbers)
    if sum(numbers) == target:
        assert reasoning_gym_verifier(f"<answer>{swapped}</answer>", rg_entry=entry) == 1.0
    assert reasoning_gym_verifier(f"<answer>{target}</answer>", rg_entry=entry) < 1.0  # no numbers used
