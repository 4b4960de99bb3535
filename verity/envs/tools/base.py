"""What a tool is: a plain function ``(arguments: str) -> str``, marked ``register_tool("name")`` when it is a
built-in; ``ToolError`` is a bad call, whose message the model reads."""

from __future__ import annotations

from collections.abc import Callable

from verity.registry import registered_as

Tool = Callable[[str], str]
TOOL = "tool"  # the registry's kind


class ToolError(Exception):
    """Raised by a tool for a bad call; its message becomes the observation."""


def register_tool(name: str) -> Callable[[Tool], Tool]:
    """Decorator marking ``fn`` as the built-in tool ``name``."""
    return registered_as(TOOL, name)
