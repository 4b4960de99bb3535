"""The Python tool: run the argument as a program in Verity's sandbox and answer with its output."""

from __future__ import annotations

from verity.envs.tools.base import register_tool
from verity.rewards.sandbox.core import SandboxLimits, run_python

LIMITS = SandboxLimits(wall_s=5.0)


@register_tool("python")
def python(source: str) -> str:
    """Standard output of ``source`` (stripped); on failure the error it printed, or why it was stopped."""
    result, _ = run_python(source, limits=LIMITS)
    if result.timed_out:
        return f"error: timed out after {LIMITS.wall_s:g} s"
    if result.ok:
        return result.stdout.strip()
    lines = result.stderr.strip().splitlines()
    return f"error: {lines[-1] if lines else f'exit status {result.returncode}'}"
