import pytest

from verity.rewards.format import format_reward, json_valid, keyword_constraint, length_constraint


@pytest.mark.parametrize(
    ("completion", "require_think", "expected"),
    [
        ("<answer>4</answer>", False, 1.0),
        ("<think>2+2</think>\n<answer>4</answer>\n", False, 1.0),
        ("<answer>4</answer>", True, 0.0),
        ("<think>2+2</think><answer>4</answer>", True, 1.0),
        ("So: <answer>4</answer>", False, 0.0),  # text outside the tags
        ("<answer>4</answer> done", False, 0.0),
        ("<answer>4</answer><answer>4</answer>", False, 0.0),  # two answers
        ("<answer> </answer>", False, 0.0),  # empty
        ("<think>a<think>b</think></think><answer>4</answer>", False, 0.0),  # nested think
        ("<think>x</think>", False, 0.0),  # no answer
        ("<answer>4", False, 0.0),  # truncated
    ],
)
def test_format_reward(completion: str, require_think: bool, expected: float) -> None:
    assert format_reward(completion, require_think=require_think) == expected


@pytest.mark.parametrize(
    ("completion", "settings", "expected"),
    [
        ('<answer>{"a": 1}</answer>', {}, 1.0),
        ("<answer>{'a': 1}</answer>", {}, 0.0),
        ('<answer>```json\n{"a": 1, "b": 2}\n```</answer>', {"required_keys": ["a", "b"]}, 1.0),
        ('<answer>{"a": 1}</answer>', {"required_keys": ["b"]}, 0.0),
        ("<answer>[1, 2]</answer>", {"required_keys": ["a"]}, 0.0),
        ("[1, 2]", {"extract": False}, 1.0),
        ("[1, 2", {"extract": False}, 0.0),
    ],
)
def test_json_valid(completion: str, settings: dict, expected: float) -> None:
    assert json_valid(completion, **settings) == expected


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"max_words": 3}, 1.0),
        ({"max_words": 2}, 0.0),
        ({"min_words": 4}, 0.0),
        ({"max_chars": 14}, 1.0),
        ({"max_chars": 13}, 0.0),
        ({"min_chars": 14, "min_words": 3}, 1.0),
    ],
)
def test_length_constraint(settings: dict, expected: float) -> None:
    assert length_constraint("one two three.", **settings) == expected  # 3 words, 14 characters


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"include": ["cat"]}, 1.0),
        ({"include": ["Cat"], "case_sensitive": True}, 0.0),
        ({"include": ["ca"]}, 0.0),
        ({"exclude": ["dog"]}, 0.0),
        ({"include": ["cat"], "exclude": ["bird"]}, 1.0),
    ],
)
def test_keyword_constraint(settings: dict, expected: float) -> None:
    assert keyword_constraint("The cat chased the dog.", **settings) == expected
