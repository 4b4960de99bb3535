"""How many distinct questions a task can train on once its held-out questions are taken out, and whether that
is small against what the run draws from it (steps x prompts per step): a pool drawn many times over is
memorized, and held-out accuracy does not follow the training reward."""

from __future__ import annotations

import math

from verity.config import Config
from verity.data.images import item_key
from verity.data.sources import TableSource, TaskSource

POOL_DRAWS = 1000  # training items read to estimate a procedural task's question space
REPEATS = 10  # warn when each training question is drawn more than this many times on average


def question_pool(source: TaskSource, held_out: set[str], draws: int = POOL_DRAWS) -> int | None:
    """Distinct training questions of ``source`` that are not held out: exact for a table, estimated for a
    procedural source from ``draws`` items (None when they were all distinct: a space too large to matter)."""
    if isinstance(source, TableSource):
        return len({item_key(item) for item in source.train_rows()} - held_out)
    keys = [key for key in (item_key(source.train_item(i)) for i in range(draws)) if key not in held_out]
    return estimated_space(len(keys), len(set(keys)))


def estimated_space(draws: int, distinct: int) -> int | None:
    """The number N of equally likely questions for which ``draws`` uniform draws show ``distinct`` different ones
    on average: N (1 - (1 - 1/N)^draws) = distinct, solved by bisection; None when every draw differed."""
    if draws == 0:
        return 0
    if distinct >= draws:
        return None
    low, high = float(distinct), float(distinct) * 1e6
    for _ in range(100):
        mid = (low + high) / 2
        if mid * -math.expm1(draws * math.log1p(-1 / mid)) < distinct:
            low = mid
        else:
            high = mid
    return round(high)


def task_demand(cfg: Config) -> dict[str, float]:
    """Training items each task gives over the run: steps x prompts per step, split by the tasks' weights (equal
    shares when sampling is balanced)."""
    total = cfg.train.steps * cfg.rollout.prompts_per_step
    tasks = cfg.data.tasks
    if cfg.data.sampling == "balanced":
        return {t.name: total / len(tasks) for t in tasks}
    weight = sum(t.weight for t in tasks)
    return {t.name: total * t.weight / weight for t in tasks}


def question_pools(sources: list[TaskSource], held_out: set[str]) -> dict[str, int | None]:
    """``question_pool`` of each task, by name."""
    return {source.name: question_pool(source, held_out) for source in sources}


def pool_warnings(cfg: Config, pools: dict[str, int | None]) -> list[str]:
    """A warning for each task whose training questions would each be drawn more than ``REPEATS`` times."""
    demand = task_demand(cfg)
    warnings = []
    for task, pool in pools.items():
        drawn = demand.get(task, 0.0)
        if pool is None or drawn <= REPEATS * max(pool, 1):
            continue
        warnings.append(
            f"task {task!r} has about {pool} distinct training questions left after its held-out ones, "
            f"and the run draws {drawn:.0f} training prompts from it "
            f"(train.steps={cfg.train.steps} x rollout.prompts_per_step={cfg.rollout.prompts_per_step}): about "
            f"{drawn / max(pool, 1):.0f} times each. RL will memorize these questions rather than learn the task, "
            "and held-out accuracy will not follow the training reward. Give the task more distinct questions "
            "(a larger configuration or more rows), hold out fewer (data.eval_items), or lower train.steps"
        )
    return warnings
