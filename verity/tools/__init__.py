"""Tools a model calls from inside its turn: the call syntax, a registry, and the built-in tools."""

from verity.tools.registry import ToolError, register_tool, run_tool, tool_names
from verity.tools.syntax import ToolCall, ToolSyntax

__all__ = ["ToolCall", "ToolError", "ToolSyntax", "register_tool", "run_tool", "tool_names"]
