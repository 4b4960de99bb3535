"""Reward throughput: math verifications per second, sandboxed Python runs per second, the fixed overhead of
one sandboxed run (target: under 50 ms), and the cost of scoring one RL step's 64 cheap answers through the
worker pool against scoring them in-process. Run: ``python -m bench.bench_rewards [--runs N]``."""

from __future__ import annotations

import argparse
import statistics
import time

from verity.rewards.config import RewardConfig
from verity.rewards.executor import RewardExecutor
from verity.rewards.math import math_reward
from verity.rewards.sandbox.core import isolation, run_python
from verity.types import Item

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


def pool_milliseconds(repeats: int, in_process: bool, workers: int = 2) -> float:
    """Median wall milliseconds to score 64 exact-match answers (one 8 x 8 RL step) with the default verifier."""
    items = [Item(str(i), "t", "p", str(i % 10)) for i in range(64)]
    texts = [f"<answer>{i % 7}</answer>" for i in range(64)]
    with RewardExecutor(RewardConfig(in_process=in_process, workers=workers)) as executor:
        executor.score(items, texts)  # workers up and warm
        walls = []
        for _ in range(repeats):
            start = time.perf_counter()
            executor.score(items, texts)
            walls.append(time.perf_counter() - start)
    return statistics.median(walls) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50, help="sandboxed runs and 20x as many math checks")
    args = parser.parse_args()
    print(f"isolation: {isolation()}")
    print(f"math verifications/s (one process): {math_per_second(args.runs * 20):.0f}")
    rate, overhead = sandbox_timings(args.runs)
    print(f"sandboxed python runs/s (sequential): {rate:.1f}")
    print(f"fixed overhead of one sandboxed run (median): {overhead * 1000:.1f} ms")
    pooled, local = pool_milliseconds(args.runs, False), pool_milliseconds(args.runs, True)
    print(f"64 answers scored (median): {pooled:.2f} ms through 2 pool workers, {local:.2f} ms in-process")


if __name__ == "__main__":
    main()
