"""The calculator tool: exact arithmetic on integers and decimals, parsed with ``ast`` (never ``eval``)."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from fractions import Fraction

from verity.envs.tools.base import ToolError, register_tool

_BINARY: dict[type, Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
MAX_DIGITS = 60  # a power tower would otherwise take the trainer's memory and time
MAX_EXPRESSION = 200


@register_tool("calc")
def calculator(expression: str) -> str:
    """Value of ``expression`` (+ - * / // % ** and parentheses) as an integer or a short decimal."""
    if len(expression) > MAX_EXPRESSION:
        raise ToolError(f"expression longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.replace("^", "**").replace("×", "*"), mode="eval")
    except SyntaxError:
        raise ToolError(f"cannot parse {expression!r}") from None
    return _format(_value(tree.body))


def _value(node: ast.expr) -> Fraction:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _value(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _power(_value(node.left), _value(node.right))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod) and right == 0:
            raise ToolError("division by zero")
        return _check_size(_BINARY[type(node.op)](left, right))
    raise ToolError(f"unsupported expression {ast.unparse(node)!r}")


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1 or abs(exponent) > 200:
        raise ToolError("exponents must be integers up to 200")
    if base == 0 and exponent < 0:
        raise ToolError("division by zero")
    return _check_size(base ** int(exponent))


def _check_size(value: Fraction) -> Fraction:
    if len(str(abs(value.numerator))) > MAX_DIGITS or len(str(value.denominator)) > MAX_DIGITS:
        raise ToolError(f"result has more than {MAX_DIGITS} digits")
    return value


def _format(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.6g}"
