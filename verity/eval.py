"""Held-out evaluation: greedy accuracy, pass@k (unbiased estimator) and maj@k; an episodic workflow's episodes."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import Field

from verity.data.images import image_data_uri
from verity.rewards.extract import extract_answer
from verity.rollout.engine import Engine
from verity.rollout.turns import episode_metrics
from verity.rollout.workflows.base import Task, Workflow
from verity.rollout.workflows.runner import flatten, run_tasks, score_groups
from verity.schema import Section
from verity.types import Item, SamplingParams, Score

Scorer = Callable[[list[Item], list[str]], list[Score]]


class EvalConfig(Section):
    """Held-out evaluation: greedy accuracy and pass@k."""

    every: int = Field(50, ge=0, description="Steps between evaluations (0: only before and after).")
    items: int | None = Field(None, gt=0, description="Held-out items per task (default: data.eval_items).")
    k: int = Field(4, ge=1, description="Samples per item for pass@k (1 disables sampling).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for pass@k.")
    batch_size: int = Field(128, gt=0, description="Sequences per generation batch.")
    threshold: float = Field(1.0, description="A completion counts as correct when its reward is at least this.")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021, Codex): 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_correct(completions: Sequence[str], correct: Sequence[bool]) -> bool:
    """maj@k: the most frequent extracted answer (ties: first seen) is a correct one."""
    answers = [extract_answer(c) for c in completions]
    counted = Counter(a for a in answers if a is not None)
    if not counted:
        return False
    top = max(counted, key=lambda a: (counted[a], -answers.index(a)))
    return any(ok for a, ok in zip(answers, correct, strict=True) if a == top)


def evaluate(
    engine: Engine,
    encode: Callable[[Item], list[int]],
    items: list[Item],
    score: Scorer,
    *,
    max_new_tokens: int,
    k: int = 1,
    temperature: float = 1.0,
    threshold: float = 1.0,
    pass_ks: Sequence[int] = (),
    chunk_size: int = 512,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Greedy accuracy on ``items``; with ``k > 1`` also pass@j for j in {1, k} and ``pass_ks`` (each at most k,
    from the same k samples at ``temperature``) and maj@k. An item counts as correct when its reward is at least
    ``threshold``. Per-task accuracy is reported as ``task/<family>/accuracy``. Items are generated in chunks of
    ``chunk_size``; ``on_progress(n)`` is called after each chunk with the number of items it held."""
    too_big = [j for j in pass_ks if not 1 <= j <= k]
    if too_big:
        raise ValueError(f"pass@{too_big[0]} needs at least {too_big[0]} samples per item; raise k (now {k})")
    greedy, greedy_ok, sample_texts, sample_ok = [], [], [], []
    for start in range(0, len(items), chunk_size):
        chunk = items[start : start + chunk_size]
        prompts = [encode(item) for item in chunk]
        outs = [o[0] for o in engine.generate(prompts, SamplingParams(max_new_tokens, temperature=0.0))]
        greedy += outs
        greedy_ok += [s.value >= threshold for s in score(chunk, [c.text for c in outs])]
        if k > 1:
            samples = engine.generate(prompts, SamplingParams(max_new_tokens, temperature=temperature, n=k))
            flat_text = [c.text for group in samples for c in group]
            ok = [s.value >= threshold for s in score([it for it in chunk for _ in range(k)], flat_text)]
            sample_texts += [flat_text[i * k : (i + 1) * k] for i in range(len(chunk))]
            sample_ok += [ok[i * k : (i + 1) * k] for i in range(len(chunk))]
        if on_progress is not None:
            on_progress(len(chunk))
    result: dict[str, Any] = {"accuracy": _mean(greedy_ok), "items": len(items)}
    for task in sorted({item.task for item in items}):
        hits = [ok for ok, item in zip(greedy_ok, items, strict=True) if item.task == task]
        result[f"task/{task}/accuracy"] = _mean(hits)
    if k > 1:
        for j in sorted({1, k, *pass_ks}):
            result[f"pass@{j}"] = _mean([pass_at_k(k, sum(o), j) for o in sample_ok])
        result[f"maj@{k}"] = _mean([majority_correct(t, o) for t, o in zip(sample_texts, sample_ok, strict=True)])
    result["samples"] = [
        _sample(item, c.text, good) for item, c, good in list(zip(items, greedy, greedy_ok, strict=True))[:8]
    ]
    return result


def evaluate_episodes(
    workflow: Workflow,
    engine: Engine,
    encode: Callable[[Item], list[int]],
    items: list[Item],
    score: Scorer,
    *,
    max_new_tokens: int,
    threshold: float = 1.0,
) -> dict[str, Any]:
    """Greedy held-out accuracy of an episodic workflow (one episode per item, no training-time help such as
    hints), with the episode metrics and the accuracy of episodes with and without a tool call (where the gain of
    tool use shows)."""
    params = SamplingParams(max_new_tokens, temperature=0.0)
    plans = workflow.plan(items)
    tasks = [
        Task(item, encode(item), params, plan, held_out=True) for item, plan in zip(items, plans, strict=True)
    ]
    groups = run_tasks(workflow, engine, tasks, score)
    score_groups(groups, score)
    rollouts = flatten(groups)
    correct = [r.reward >= threshold for r in rollouts]
    result: dict[str, Any] = {"accuracy": _mean(correct), "items": len(items)}
    for task in sorted({item.task for item in items}):
        result[f"task/{task}/accuracy"] = _mean(
            [ok for ok, r in zip(correct, rollouts, strict=True) if r.item.task == task]
        )
    result.update(episode_metrics(rollouts))
    used = [any(t.tool for t in r.turns or []) for r in rollouts]
    result["accuracy_with_tool"] = _mean([ok for ok, u in zip(correct, used, strict=True) if u])
    result["accuracy_without_tool"] = _mean([ok for ok, u in zip(correct, used, strict=True) if not u])
    result["samples"] = [
        {
            "task": r.item.task,
            "prompt": r.item.prompt,
            "completion": r.completion.text,
            "answer": r.item.answer,
            "correct": ok,
        }
        for r, ok in list(zip(rollouts, correct, strict=True))[:8]
    ]
    return result


def _sample(item: Item, completion: str, correct: bool) -> dict[str, Any]:
    """One shown greedy answer; an item's images come along as small PNG data URIs."""
    sample = {"task": item.task, "prompt": item.prompt, "completion": completion, "answer": item.answer}
    sample["correct"] = correct
    if item.images:
        sample["images"] = [image_data_uri(ref) for ref in item.images]
    return sample


def _mean(values: Sequence[float | bool]) -> float:
    return sum(float(v) for v in values) / len(values) if values else 0.0
