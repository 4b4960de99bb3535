"""The environment contract: text in, text out, Gymnasium-like in spirit.

An environment is any object with two methods::

    class Echo:
        def reset(self, item: Item) -> str:                  # the first thing the model reads
            return item.prompt
        def step(self, turn: str) -> tuple[str, float, bool, dict]:
            return "", float(turn.strip() == item.answer), True, {}

``reset`` returns the text of the first user message (it goes through the run's chat template). ``step`` gets
the text the model wrote in one turn and returns ``(observation, reward, done, info)``: the observation is
appended to the context as environment tokens (never trained on), the reward belongs to that turn, ``done``
ends the episode. An optional ``stop_strings`` attribute lists texts that end a model turn early (a tool call's
close tag), so the environment can answer before the model goes on. ``info["tool"]`` names a tool the turn
called (counted in metrics). One environment object runs one episode at a time; a fresh one is made per episode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from verity.registry import registered_as
from verity.types import Item

StepResult = tuple[str, float, bool, dict[str, Any]]


class Env(Protocol):
    def reset(self, item: Item) -> str: ...

    def step(self, turn: str) -> StepResult: ...


ENV = "environment"  # the registry's kind


def register_env(name: str) -> Callable[[Callable[..., Env]], Callable[..., Env]]:
    """Decorator marking an environment factory (called with ``env.settings`` as keywords, once per episode) as
    the built-in environment ``name``."""
    return registered_as(ENV, name)
