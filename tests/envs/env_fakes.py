"""Scripted policies and misbehaving environments and tools for the multi-turn tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from helpers.fake_engine import FakeEngine

from verity.envs.base import Env, StepResult
from verity.envs.tools import register_tool
from verity.rollout.engine import Engine
from verity.rollout.workflows.base import Task
from verity.rollout.workflows.episode import Budget, EpisodeWorkflow, Guidance
from verity.rollout.workflows.runner import flatten, run_tasks
from verity.types import Completion, Item, Rollout, SamplingParams, Score

TURN_LOGPROB = -0.25


class Player:
    """The episode workflow run the way a runtime runs it, on ``engine``: ``run`` plays every item's group at once
    (calls batched by round) and ``stats`` holds the batch's counts."""

    def __init__(
        self,
        engine: Engine,
        tokenizer: Any,
        encode: Callable[[Item], list[int]],
        make_env: Callable[[], Env],
        budget: Budget,
        guidance: Guidance | None = None,
    ) -> None:
        self.engine = engine
        self.workflow = EpisodeWorkflow.of(tokenizer, encode, make_env, budget, guidance)
        self.stats: dict[str, float] = {}

    def run(self, items: list[Item], params: SamplingParams, guided: bool = True) -> list[Rollout]:
        tasks = [Task(item, [], params, held_out=not guided) for item in items]
        groups = run_tasks(self.workflow, self.engine, tasks, _no_verifier)
        self.stats = self.workflow.observe(groups)
        return flatten(groups)


def _no_verifier(items: list[Item], texts: list[str]) -> list[Score]:
    raise AssertionError("episodes are scored by their environment")


class ScriptedEngine(FakeEngine):
    """Answers each context with ``script(context_text, turn_index)``; every token gets log-prob -0.25 and the
    engine, like the real one, does not know about stop strings (the runner cuts the text)."""

    def __init__(self, tokenizer: Any, script: Callable[[str, int], str]) -> None:
        super().__init__(tokenizer, version=3)
        self.script = script
        self.contexts: list[str] = []

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        out = []
        for ids in prompts:
            text = self.tokenizer.decode(ids)
            self.contexts.append(text)
            turn = text.count("<|assistant|>") and text.split("<|assistant|>")[-1].count("</result>")
            reply = self.tokenizer.encode(self.script(text, turn), add_special_tokens=False)
            reply = reply[: params.max_new_tokens]
            done = self.tokenizer.eos_token_id in reply
            out.append(
                [
                    Completion(
                        reply,
                        [TURN_LOGPROB] * len(reply),
                        self.tokenizer.decode(reply),
                        "stop" if done else "length",
                        self.version,
                    )
                ]
                * params.n
            )
        return out


class NeverDone:
    """Answers every turn with an observation and never ends the episode."""

    def reset(self, item: Item) -> str:
        return item.prompt

    def step(self, turn: str) -> StepResult:
        return "<result>again</result>", 0.5, False, {}


class Exploding:
    """Raises on the second turn."""

    def __init__(self) -> None:
        self.turns = 0

    def reset(self, item: Item) -> str:
        return item.prompt

    def step(self, turn: str) -> StepResult:
        self.turns += 1
        if self.turns == 2:
            raise RuntimeError("environment bug")
        return "<result>go on</result>", 0.25, False, {}


class HangsOnSecondStep:
    """Answers the first turn, then hangs far longer than any test's step limit."""

    def __init__(self) -> None:
        self.turns = 0

    def reset(self, item: Item) -> str:
        return item.prompt

    def step(self, turn: str) -> StepResult:
        self.turns += 1
        if self.turns == 2:
            time.sleep(30)
        return "<result>go on</result>", 0.25, False, {}


@register_tool("test_raises")
def raising_tool(arguments: str) -> str:
    raise ZeroDivisionError("tool bug")


@register_tool("test_hangs")
def hanging_tool(arguments: str) -> str:
    time.sleep(30)
    return "never"


class CodeSum:
    """Rewards each turn with its characters' code sum mod 3 and ends after three turns: varied turn rewards
    and episode lengths from any policy."""

    def __init__(self) -> None:
        self.turns = 0

    def reset(self, item: Item) -> str:
        return item.prompt

    def step(self, turn: str) -> StepResult:
        self.turns += 1
        return "<result>ok</result>", float(sum(map(ord, turn)) % 3), self.turns >= 3, {}
