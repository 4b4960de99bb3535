"""Code verifiers: run the completion's Python program in the sandbox against the item's hidden tests.

Two test styles, as in competitive programming and function-synthesis benchmarks:

* stdin/stdout: ``tests = [{"input": "1 2\\n", "output": "3\\n"}, ...]``; each test is one sandboxed run and passes
  when stdout equals the expected output up to trailing whitespace on each line and trailing blank lines;
* function call: ``tests = ["assert add(1, 2) == 3", ...]``; the program runs once, each left-hand call is
  evaluated in the sandbox and only its ``repr`` comes back; the expected value (a Python literal) is compared in
  this process, so the program never sees expected outputs and cannot fake a pass by patching ``assert`` or
  ``exit``.

The reward is the fraction of tests passed with ``partial_credit``, else 1.0 only when all pass.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence
from typing import Any

from verity.rewards.extract import extract_code
from verity.rewards.sandbox.core import SandboxLimits, run_python
from verity.rewards.verifier import register_verifier


def split_assert(test: str) -> tuple[str, Any]:
    """``"assert f(x) == 3"`` -> ``("f(x)", 3)``; the right side must be a Python literal."""
    try:
        node = ast.parse(test.strip()).body
    except SyntaxError as exc:
        raise ValueError(f"code test {test!r} is not valid Python: {exc.msg}") from exc
    if len(node) != 1 or not isinstance(node[0], ast.Assert) or not isinstance(node[0].test, ast.Compare):
        raise ValueError(f"code test {test!r} must look like 'assert <call> == <literal>'")
    compare = node[0].test
    if len(compare.ops) != 1 or not isinstance(compare.ops[0], ast.Eq):
        raise ValueError(f"code test {test!r} must compare with a single '=='")
    try:
        expected = ast.literal_eval(compare.comparators[0])
    except ValueError as exc:
        raise ValueError(f"code test {test!r}: the expected value must be a Python literal") from exc
    return ast.unparse(compare.left), expected


def same_value(got: Any, want: Any) -> bool:
    """Equality of literal values; only where the test expects a float is a relative and absolute 1e-9 allowed.
    An expected int is matched exactly (a float equal to it passes, as ``==`` would have it; an approximation
    of a big integer does not). Never raises: an int beyond the float range where a float is expected (``10**400``)
    or a structure too deep to compare is simply not the expected value."""
    try:
        return _same(got, want)
    except (OverflowError, RecursionError, MemoryError, TypeError, ValueError):
        return False


def _same(got: Any, want: Any) -> bool:
    if isinstance(got, bool) or isinstance(want, bool):
        return type(got) is type(want) and got == want
    if isinstance(got, int | float) and isinstance(want, float):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(got, int | float) and isinstance(want, int):
        return got == want
    if isinstance(got, list | tuple) and isinstance(want, list | tuple):
        return type(got) is type(want) and len(got) == len(want) and all(map(_same, got, want))
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)
    return type(got) is type(want) and got == want


def _same_output(got: str, want: str) -> bool:
    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.rstrip().splitlines()]

    return lines(got) == lines(want)


def _stdio_passes(program: str, tests: Sequence[dict[str, str]], limits: SandboxLimits, stop_early: bool) -> int:
    passed = 0
    for test in tests:
        result, _ = run_python(program, stdin=str(test["input"]), limits=limits)
        ok = result.ok and not result.truncated and _same_output(result.stdout, str(test["output"]))
        passed += ok
        if stop_early and not ok:
            break
    return passed


def _call_passes(program: str, tests: Sequence[str], limits: SandboxLimits) -> int:
    calls, expected = zip(*(split_assert(t) for t in tests), strict=True)
    wall = limits.wall_s * len(calls)
    limits = SandboxLimits(**{**vars(limits), "wall_s": wall, "cpu_s": math.ceil(wall)})
    _, records = run_python(program, limits=limits, calls=list(calls))
    passed = 0
    for (ok, text), want in zip(records, expected, strict=False):
        try:
            passed += ok and same_value(ast.literal_eval(text), want)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return passed


@register_verifier("code", preload=("verity.rewards.sandbox.warm",))
def code_reward(
    completion: str,
    *,
    tests: Sequence[Any] | None = None,
    partial_credit: bool = False,
    timeout_s: float = 2.0,
    memory_mb: int = 512,
    **fields: Any,
) -> float | None:
    """Run the last fenced code block (or the answer) against ``tests`` (an item field, see the module doc).

    Settings: ``partial_credit`` (bool, False) — fraction of tests passed instead of all-or-nothing;
    ``timeout_s`` (float, 2.0) — wall-clock limit per test (CPU limit rounded up), below ``reward.timeout_s``,
    which also cuts all tests together; ``memory_mb`` (int, 512) — per process and, where a cgroup can be made,
    for the whole run.
    ``None`` when the item has no tests.
    """
    if not tests:
        return None
    program = extract_code(completion)
    if program is None:
        return 0.0
    limits = SandboxLimits(wall_s=timeout_s, cpu_s=max(1, math.ceil(timeout_s)), memory_mb=memory_mb)
    if all(isinstance(t, str) for t in tests):
        passed = _call_passes(program, tests, limits)
    elif all(isinstance(t, dict) and {"input", "output"} <= t.keys() for t in tests):
        passed = _stdio_passes(program, tests, limits, stop_early=not partial_credit)
    else:
        raise ValueError("code tests must be all assert strings or all {'input', 'output'} dicts")
    return passed / len(tests) if partial_credit else float(passed == len(tests))
