"""Tool-call parsing, the calculator, the built-in environments' rules and the registry's errors."""

from __future__ import annotations

import pytest

from verity.envs import env_factory
from verity.envs.calculator import make_item
from verity.envs.guessing import make_item as guessing_item
from verity.envs.tools import ToolCall, ToolSyntax, run_tool
from verity.schema import ConfigError
from verity.types import Item


def test_syntax_finds_the_last_call_and_reports_malformed_ones():
    syntax = ToolSyntax("[[", "]]", "{", "}")
    assert syntax.find_call("a [[calc: 1+1]] b [[calc: 2*3]]") == ToolCall("calc", "2*3")
    assert syntax.find_call("no call [[calc: 1") is None
    assert "malformed call '2*3'" in syntax.find_call("[[2*3]]")
    assert syntax.result("6") == "{6}"


@pytest.mark.parametrize(
    ("expression", "result"),
    [("237*82", "19434"), ("(2+3)*-4", "-20"), ("7/2", "3.5"), ("2^10", "1024"), ("10 % 4", "2")],
)
def test_calculator_values(expression, result):
    assert run_tool(ToolCall("calc", expression), ["calc"], 1.0) == result


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        ("1/0", "error: division by zero"),
        ("2**1000", "error: exponents must be integers up to 200"),
        ("9**200", "error: result has more than 60 digits"),
        ("__import__('os')", "error: unsupported expression"),
        ("1 +", "error: cannot parse"),
    ],
)
def test_calculator_errors_are_text(expression, error):
    assert run_tool(ToolCall("calc", expression), ["calc"], 1.0).startswith(error)


def test_unknown_or_disallowed_tool_is_an_observation():
    assert run_tool(ToolCall("calc", "1"), ["python"], 1.0) == "error: unknown tool 'calc' (available: python)"


def test_calculator_items_and_demonstrations():
    items = [make_item(0, i, tool_demo_share=0.5) for i in range(40)]
    a, b = (int(x) for x in items[0]["prompt"][len("What is ") : -1].split(" * "))
    assert 100 <= a <= 999 and 10 <= b <= 99 and items[0]["answer"] == str(a * b)
    with_tool = [it for it in items if len(it["demonstration"]) == 3]
    assert 10 <= len(with_tool) <= 30
    call, result, answer = with_tool[0]["demonstration"]
    assert call[1] and not result[1] and answer[1] and result[0] == f"<result>{with_tool[0]['answer']}</result>"


def test_guessing_rules_and_bisection_demonstration():
    env = env_factory("guessing", {})()
    item = Item("g", "guess", **{k: guessing_item(0, 3)[k] for k in ("prompt", "answer")})
    target = int(item.answer)
    env.reset(item)
    assert env.step(f"<answer>{target - 1}</answer>")[:3] == ("<result>higher</result>", 0.0, False)
    assert env.step(f"<answer>{target + 1}</answer>")[:3] == ("<result>lower</result>", 0.0, False)
    assert env.step("maybe")[2] is False
    assert env.step(f"<answer>{target}</answer>")[1:3] == (1.0, True)
    demo = guessing_item(0, 3)["demonstration"]
    assert demo[-1] == [f"<answer>{target}</answer>", True] and len(demo) <= 2 * 4 - 1  # log2(16) guesses


def test_registry_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"env\.name: unknown environment 'nope'"):
        env_factory("nope", {})
    with pytest.raises(ConfigError, match=r"env\.settings: cannot build environment 'calculator'"):
        env_factory("calculator", {"colour": "red"})
    with pytest.raises(ConfigError, match=r"env\.name: 'verity.types:Item' builds"):
        env_factory("verity.types:Item", {"id": "x", "task": "t", "prompt": "p"})
