"""A guessing game: the model guesses a hidden number with ``<answer>n</answer>`` and hears ``higher`` or
``lower`` until it is right or the turns run out (registered as ``guessing``)."""

from __future__ import annotations

import random
import re
from typing import Any

from verity.envs.base import StepResult, register_env
from verity.envs.tools import ToolSyntax
from verity.rewards.extract import extract_answer
from verity.types import Item

_INTEGER = re.compile(r"-?\d+")


@register_env("guessing")
class GuessingEnv:
    """Reward 1 on the turn that names the hidden number (``item.answer``), 0 on the others. Feedback is in the
    result tags (``tags`` as for ``ToolEnv``); a turn without a number is told so and goes on."""

    def __init__(self, tags: dict[str, str] | None = None) -> None:
        self.syntax = ToolSyntax(**(tags or {}))
        self.stop_strings = ("</answer>",)
        self.target = 0

    def reset(self, item: Item) -> str:
        if item.answer is None or not _INTEGER.fullmatch(item.answer.strip()):
            raise ValueError(f"guessing: item {item.id} needs an integer answer, got {item.answer!r}")
        self.target = int(item.answer)
        return item.prompt

    def step(self, turn: str) -> StepResult:
        numbers = _INTEGER.findall(extract_answer(turn) or "")
        if not numbers:
            return self.syntax.result("say a number as <answer>n</answer>"), 0.0, False, {}
        guess = int(numbers[-1])
        if guess == self.target:
            return "", 1.0, True, {}
        return self.syntax.result("higher" if guess < self.target else "lower"), 0.0, False, {}


def make_item(seed: int, index: int, low: int = 1, high: int = 16) -> dict[str, Any]:
    """A hidden number in ``[low, high]``; the demonstration is the bisection transcript that finds it."""
    target = random.Random(seed * 1_000_003 + index).randint(low, high)
    demo: list[list[Any]] = []
    lo, hi = low, high
    while True:
        guess = (lo + hi) // 2
        demo.append([f"<answer>{guess}</answer>", True])
        if guess == target:
            break
        feedback = "higher" if guess < target else "lower"
        demo.append([f"<result>{feedback}</result>", False])
        lo, hi = (guess + 1, hi) if guess < target else (lo, guess - 1)
    return {
        # The game number keeps prompts distinct, so held-out games are never trained on (the hidden numbers
        # themselves repeat: there are only high - low + 1 of them).
        "prompt": f"Game {index}: guess my number from {low} to {high}.",
        "answer": str(target),
        "demonstration": demo,
        "hint": f"bisect: start at {(low + high) // 2}",
    }
