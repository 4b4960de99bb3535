"""Multi-turn rollouts as tensors and numbers: TRLOO's turn inputs, per-step metrics, held-out evaluation."""

from __future__ import annotations

from typing import Any

import torch

from verity.rollout.engine import SamplingParams
from verity.types import Item, Rollout, Turn


def _turns_of(r: Rollout) -> list[Turn]:
    """A single-turn rollout is one turn over its whole completion, rewarded with its score."""
    return r.turns if r.turns is not None else [Turn(0, len(r.completion.token_ids), r.reward)]


def turn_tensors(rollouts: list[Rollout], width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(turn_rewards (N, K), turn_mask (N, K), token_turns (N, width))`` for ``compute_advantages(turns=...)``,
    aligned with ``collate``'s columns: completion token j of row i sits at column ``len(prompt_ids) + j``.
    ``token_turns`` is the turn index of each model token and -1 on prompt, environment and padding tokens."""
    turns = [_turns_of(r) for r in rollouts]
    k = max(1, max(len(t) for t in turns))
    rewards = torch.zeros(len(rollouts), k)
    mask = torch.zeros(len(rollouts), k)
    token_turns = torch.full((len(rollouts), width), -1, dtype=torch.long)
    for i, (r, row) in enumerate(zip(rollouts, turns, strict=True)):
        offset = len(r.prompt_ids)
        for j, turn in enumerate(row):
            rewards[i, j], mask[i, j] = turn.reward, 1.0
            token_turns[i, offset + turn.start : offset + turn.end] = j
    return rewards, mask, token_turns


def episode_metrics(rollouts: list[Rollout]) -> dict[str, float]:
    """Means over episodes: turns, tool calls, and the share of episodes that called a tool (empty for
    single-turn rollouts)."""
    episodes = [r.turns for r in rollouts if r.turns is not None]
    if not episodes:
        return {}
    calls = [sum(t.tool is not None for t in turns) for turns in episodes]
    return {
        "env/turns": sum(len(t) for t in episodes) / len(episodes),
        "env/tool_calls": sum(calls) / len(episodes),
        "env/tool_rate": sum(c > 0 for c in calls) / len(episodes),
    }


def evaluate_episodes(runner: Any, items: list[Item], threshold: float) -> dict[str, Any]:
    """Greedy held-out accuracy of an ``EpisodeRunner`` (no guidance), with the episode metrics and the accuracy
    of episodes with and without a tool call (where the gain of tool use shows)."""
    params = SamplingParams(runner.budget.turn_tokens, temperature=0.0)
    rollouts = runner.run(items, params, guided=False)
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


def _mean(values: list[bool]) -> float:
    return sum(values) / len(values) if values else 0.0
