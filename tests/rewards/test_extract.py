import pytest

from verity.rewards.config import RewardConfig
from verity.rewards.executor import RewardExecutor
from verity.rewards.extract import extract_answer, extract_code, normalize_text, parse_number
from verity.types import Item


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<answer>42</answer>", "42"),
        ("<think>hm</think><answer> 42 </answer>", "42"),
        ("<answer>42</answer> later <answer>42</answer>", None),  # repeated answers: none, even agreeing
        ("<answer>41</answer><answer>42</answer>", None),  # conflicting answers: no credit
        ("<answer>42", None),  # truncated
        ("<answer>42</answer> wait <answer>43", None),  # revised, then cut off
        ("<answer>  </answer>", None),  # empty
        ("no tags at all 42", None),
        ("<answer>x <answer>7</answer>", None),  # nested: malformed
        ("<answer>1<answer>1<answer>1</answer>", None),  # stuttered opening tags
        ("<answer>1</answer></answer>", None),  # stray closing tag
        ("</answer>1<answer>", None),  # closed before opened
        ("<think>a<b</think>\n<answer> x < y </answer>\n", "x < y"),
    ],
)
def test_extract_answer(completion: str, expected: str | None) -> None:
    assert extract_answer(completion) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42.0),
        ("-3.5", -3.5),
        ("1,234", 1234.0),
        ("$12", 12.0),
        ("3/4", 0.75),
        ("1e3", 1000.0),
        ("1/0", None),
        ("abc", None),
        ("4 apples", None),
        ("", None),
        ("1,23", None),
        ("1e400", None),
        ("-1e400", None),
        ("1" + "0" * 400 + "/3", None),
    ],
)
def test_parse_number(text: str, expected: float | None) -> None:
    assert parse_number(text) == expected


def test_normalize_text() -> None:
    assert normalize_text("  The   Answer. ") == "the answer"
    assert normalize_text("$x+1$") == "x+1"


def test_extract_code_prefers_last_fence_inside_answer() -> None:
    completion = "```python\nprint(1)\n```\n<answer>```python\nprint(2)\n```</answer>"
    assert extract_code(completion) == "print(2)\n"
    assert extract_code("```py\nx = 1\n```\nthen ```\ny = 2\n```") == "y = 2\n"
    assert extract_code("<answer>print(3)</answer>") == "print(3)"
    assert extract_code("nothing here") is None


@pytest.mark.parametrize(
    "completion",
    [
        "<answer>7<answer>7<answer>7</answer>",
        "<answer>7</answer><answer>7</answer>",
        "<answer>7",
        "<answer>7</answer></answer>",
    ],
)
def test_malformed_or_repeated_tags_score_0_under_the_default_reward(completion: str) -> None:
    item = Item("t/0", "t", "3 + 4 =", "7")
    with RewardExecutor(RewardConfig(in_process=True)) as executor:
        malformed, clean = executor.score([item, item], [completion, "<answer>7</answer>"])
    assert (malformed.value, clean.value) == (0.0, 1.0)
