"""The tool-call syntax in model output: ``<tool>name: arguments</tool>``, answered by ``<result>text</result>``.

The four tags are configurable (``env.tool_tags``); the tiny tokenizer has the defaults as single tokens.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ToolCall:
    """A parsed call: the tool's name and its argument text (stripped)."""

    name: str
    arguments: str


@dataclass(frozen=True)
class ToolSyntax:
    """Tags around a call and around its result."""

    call_open: str = "<tool>"
    call_close: str = "</tool>"
    result_open: str = "<result>"
    result_close: str = "</result>"

    def __post_init__(self) -> None:
        for name in ("call_open", "call_close", "result_open", "result_close"):
            if not getattr(self, name):
                raise ValueError(f"tool tag {name} must be a non-empty string")

    def find_call(self, text: str) -> ToolCall | str | None:
        """The last complete call in ``text``; an error message when the call is malformed (no ``name:``
        prefix); None when there is no call. A model turn ends at the close tag, so the last call is its own."""
        end = text.rfind(self.call_close)
        if end < 0:
            return None
        start = text.rfind(self.call_open, 0, end)
        if start < 0:
            return None
        body = text[start + len(self.call_open) : end]
        name, sep, arguments = body.partition(":")
        if not sep or not name.strip():
            return f"malformed call {body.strip()!r}: write {self.call_open}name: arguments{self.call_close}"
        return ToolCall(name.strip(), arguments.strip())

    def result(self, text: str) -> str:
        return f"{self.result_open}{text}{self.result_close}"
