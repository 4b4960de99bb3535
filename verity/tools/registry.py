"""Tools by name. A tool is a plain function ``(arguments: str) -> str``; whatever goes wrong inside it
(an exception, a hang past the timeout, an unknown name) comes back as observation text, never as a crash."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from verity.registry import Registry
from verity.tools.syntax import ToolCall

Tool = Callable[[str], str]
_TOOLS: Registry[Tool] = Registry("tool", ("verity.tools.calculator", "verity.tools.python"))
MAX_RESULT_CHARS = 200  # a result is read by the model: long outputs only crowd its context


class ToolError(Exception):
    """Raised by a tool for a bad call; its message becomes the observation."""


def register_tool(name: str) -> Callable[[Tool], Tool]:
    return _TOOLS.register(name)


def tool_names() -> list[str]:
    return _TOOLS.names()


def get_tool(name: str) -> Tool:
    return _TOOLS.get(name)


def run_tool(call: ToolCall, allowed: Iterable[str], timeout_s: float) -> str:
    """The observation text for ``call``: the tool's output (cut to ``MAX_RESULT_CHARS``) or ``error: ...``.

    The tool runs in a daemon thread so a hang costs ``timeout_s`` and then the episode goes on; the thread
    cannot be killed, so tools that may run long (Python) enforce their own limit as well (the sandbox does).
    """
    allowed = set(allowed)
    if call.name not in allowed:
        return f"error: unknown tool {call.name!r} (available: {', '.join(sorted(allowed))})"
    tool = get_tool(call.name)
    box: dict[str, str] = {}

    def target() -> None:
        try:
            box["out"] = str(tool(call.arguments))
        except ToolError as err:
            box["out"] = f"error: {err}"
        except Exception as err:  # a buggy tool is the model's observation, not the trainer's crash
            box["out"] = f"error: {type(err).__name__}: {err}"

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return f"error: {call.name} timed out after {timeout_s:g} s"
    return box["out"][:MAX_RESULT_CHARS]
