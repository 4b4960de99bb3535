"""Tools a model calls from inside its turn: the call syntax, a registry, and the built-in tools."""

from verity.envs.tools.base import ToolError, register_tool
from verity.envs.tools.registry import run_tool, tool_names
from verity.envs.tools.syntax import ToolCall, ToolSyntax

__all__ = ["ToolCall", "ToolError", "ToolSyntax", "register_tool", "run_tool", "tool_names"]
