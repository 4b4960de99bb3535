"""Tools by name. A tool is a plain function ``(arguments: str) -> str``; whatever goes wrong inside it
(an exception, a hang past the timeout, an unknown name) comes back as observation text, never as a crash."""

from __future__ import annotations

from collections.abc import Iterable

from verity.envs.timeouts import CallTimedOut, call_with_timeout
from verity.envs.tools.base import TOOL, Tool, ToolError
from verity.envs.tools.syntax import ToolCall
from verity.registry import Registry

_TOOLS: Registry[Tool] = Registry(TOOL, ("verity.envs.tools.calculator", "verity.envs.tools.python"))
MAX_RESULT_CHARS = 200  # a result is read by the model: long outputs only crowd its context


def tool_names() -> list[str]:
    return _TOOLS.names()


def get_tool(name: str) -> Tool:
    return _TOOLS.get(name)


def run_tool(call: ToolCall, allowed: Iterable[str], timeout_s: float) -> str:
    """The observation text for ``call``: the tool's output (cut to ``MAX_RESULT_CHARS``) or ``error: ...``.

    The tool runs on a daemon thread (``call_with_timeout``) so a hang costs ``timeout_s`` and then the episode
    goes on; the thread cannot be killed, so tools that may run long (Python) enforce their own limit as well
    (the sandbox does).
    """
    allowed = set(allowed)
    if call.name not in allowed:
        return f"error: unknown tool {call.name!r} (available: {', '.join(sorted(allowed))})"
    tool = get_tool(call.name)
    try:
        out = call_with_timeout(lambda: str(tool(call.arguments)), timeout_s, f"tool {call.name}")
    except CallTimedOut:
        return f"error: {call.name} timed out after {timeout_s:g} s"
    except ToolError as err:
        return f"error: {err}"
    except Exception as err:  # a buggy tool is the model's observation, not the trainer's crash
        return f"error: {type(err).__name__}: {err}"
    return out[:MAX_RESULT_CHARS]
