"""Reward throughput: math verifications per second, sandboxed Python runs per second, and the fixed overhead of
one sandboxed run (target: under 50 ms). Run: ``python bench/bench_rewards.py [--runs N]``."""

from __future__ import annotations

import argparse
import statistics
import time

from verity.rewards.math import math_reward
from verity.rewards.sandbox import isolation, run_python

_MATH_CASES = [
    ("<answer>\\frac{1}{2}</answer>", "0.5"),
    ("<answer>(x+1)^2</answer>", "x^2+2x+1"),
    ("<answer>\\{1,2\\}</answer>", "\\{2,1\\}"),
    ("<answer>42</answer>", "41"),
]


def math_per_second(n: int) -> float:
    math_reward(*_MATH_CASES[0][:1], answer=_MATH_CASES[0][1])  # import math-verify and sympy first
    start = time.perf_counter()
    for i in range(n):
        completion, answer = _MATH_CASES[i % len(_MATH_CASES)]
        math_reward(completion, answer=answer)
    return n / (time.perf_counter() - start)


def sandbox_timings(n: int) -> tuple[float, float]:
    """(runs per second, median wall seconds) of a sandboxed program that does nothing."""
    run_python("pass")
    walls = []
    start = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        run_python("pass")
        walls.append(time.perf_counter() - t)
    return n / (time.perf_counter() - start), statistics.median(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50, help="sandboxed runs and 20x as many math checks")
    args = parser.parse_args()
    print(f"isolation: {isolation()}")
    print(f"math verifications/s (one process): {math_per_second(args.runs * 20):.0f}")
    rate, overhead = sandbox_timings(args.runs)
    print(f"sandboxed python runs/s (sequential): {rate:.1f}")
    print(f"fixed overhead of one sandboxed run (median): {overhead * 1000:.1f} ms")


if __name__ == "__main__":
    main()
