"""Answering with tools, and the built-in arithmetic task that needs one.

``ToolEnv`` (registered as ``tools`` and ``calculator``): each model turn either calls a tool, answered with
its result, or ends the episode with an ``<answer>``, rewarded 1 when it equals the item's answer.
``make_item`` generates products of a 3-digit and a 2-digit number: a tiny model cannot multiply them in its
head, but it can learn to copy the factors into ``<tool>calc: a*b</tool>`` and the result into its answer.
"""

from __future__ import annotations

import random
from typing import Any

from verity.envs.base import StepResult, register_env
from verity.envs.tools import ToolSyntax, run_tool
from verity.rewards.extract import extract_answer, parse_number
from verity.types import Item


class ToolEnv:
    """Tool calls until an answer. Settings: ``tools`` (registered tool names), ``max_calls`` (a further call
    ends the episode unrewarded), ``timeout_s`` per call, ``tags`` (the four tool tags)."""

    def __init__(
        self,
        tools: list[str] | tuple[str, ...] = ("calc",),
        max_calls: int = 3,
        timeout_s: float = 5.0,
        tags: dict[str, str] | None = None,
    ) -> None:
        if max_calls < 0 or timeout_s <= 0:
            raise ValueError("max_calls must be >= 0 and timeout_s > 0")
        self.tools = tuple(tools)
        self.max_calls = max_calls
        self.timeout_s = timeout_s
        self.syntax = ToolSyntax(**(tags or {}))
        self.stop_strings = (self.syntax.call_close,)
        self.answer: str | None = None
        self.calls = 0

    def reset(self, item: Item) -> str:
        self.answer, self.calls = item.answer, 0
        return item.prompt

    def step(self, turn: str) -> StepResult:
        call = self.syntax.find_call(turn)
        if call is None:
            return "", self.score(turn), True, {}
        if self.calls >= self.max_calls:
            return "", 0.0, True, {"error": f"more than {self.max_calls} tool calls"}
        self.calls += 1
        if isinstance(call, str):
            return self.syntax.result(f"error: {call}"), 0.0, False, {"tool": "malformed"}
        output = run_tool(call, self.tools, self.timeout_s)
        return self.syntax.result(output), 0.0, False, {"tool": call.name}

    def score(self, turn: str) -> float:
        """1.0 when the turn's ``<answer>`` equals the item's answer (as numbers when both are numbers)."""
        given = extract_answer(turn)
        if given is None or self.answer is None:
            return 0.0
        a, b = parse_number(given), parse_number(self.answer)
        if a is not None and b is not None:
            return float(abs(a - b) <= 1e-9 * max(1.0, abs(b)))
        return float(given.strip() == self.answer.strip())


register_env("tools")(ToolEnv)
register_env("calculator")(ToolEnv)


def make_item(
    seed: int, index: int, digits: tuple[int, int] = (3, 2), tool_demo_share: float = 0.2
) -> dict[str, Any]:
    """One product ``a * b`` (``digits`` digits each). ``demonstration`` (for the tiny base's warm-up) is a
    tool call for a ``tool_demo_share`` of items and a bare answer otherwise; the calculator's result is an
    environment segment (``False``: not trained on). ``hint`` is the guidance for re-attempts."""
    rng = random.Random(seed * 1_000_003 + index)
    a, b = (rng.randint(10 ** (d - 1), 10**d - 1) for d in digits)
    call, product = f"<tool>calc: {a}*{b}</tool>", a * b
    if rng.random() < tool_demo_share:
        demo = [[call, True], [f"<result>{product}</result>", False], [f"<answer>{product}</answer>", True]]
    else:
        demo = [[f"<answer>{product}</answer>", True]]
    return {
        "prompt": f"What is {a} * {b}?",
        "answer": str(product),
        "demonstration": demo,
        "hint": f"call the calculator: {call}",
    }
