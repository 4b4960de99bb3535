"""Multi-turn rollouts as tensors and numbers: TRLOO's turn inputs, per-step metrics, held-out evaluation.

A single-turn rollout whose score carries step scores (``Score.steps``, from a process verifier) is split into
one turn per step, so step-level estimators (``grpo_process``) read steps through the same turn tensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from verity.types import Rollout, Turn


def step_turns(
    token_ids: Sequence[int], steps: Sequence[tuple[int, float]], decode: Callable[[list[int]], str]
) -> list[Turn]:
    """One turn per scored step: step k ends at character ``steps[k][0]`` of the decoded completion, and ends at
    the first token whose decoded prefix reaches that character (a token straddling the boundary joins the step
    it ends in). The last step runs to the last token. Steps that cover no token are dropped."""
    turns: list[Turn] = []
    start = 0
    for k, (end_char, value) in enumerate(steps):
        end = len(token_ids) if k == len(steps) - 1 else _token_end(token_ids, end_char, decode, start)
        if end > start:
            turns.append(Turn(start, end, float(value)))
            start = end
    return turns


def _token_end(token_ids: Sequence[int], end_char: int, decode: Callable[[list[int]], str], low: int) -> int:
    """The least j >= low with ``len(decode(token_ids[:j])) >= end_char`` (binary search; prefixes grow)."""
    high = len(token_ids)
    while low < high:
        mid = (low + high) // 2
        if len(decode(list(token_ids[:mid]))) >= end_char:
            high = mid
        else:
            low = mid + 1
    return low


def _turns_of(r: Rollout, decode: Callable[[list[int]], str] | None) -> list[Turn]:
    """A multi-turn rollout's turns; a step-scored one's steps (given ``decode``); else one turn over the whole
    completion, rewarded with its score."""
    if r.turns is not None:
        return r.turns
    if r.score.steps and decode is not None:
        turns = step_turns(r.completion.token_ids, r.score.steps, decode)
        if turns:
            return turns
    return [Turn(0, len(r.completion.token_ids), r.reward)]


def turn_tensors(
    rollouts: list[Rollout], width: int, decode: Callable[[list[int]], str] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(turn_rewards (N, K), turn_mask (N, K), token_turns (N, width))`` for ``compute_advantages(turns=...)``,
    aligned with ``collate``'s columns: completion token j of row i sits at column ``len(prompt_ids) + j``.
    ``token_turns`` is the turn index of each model token and -1 on prompt, environment and padding tokens.
    With ``decode`` (the tokenizer's), step-scored rollouts give one turn per step."""
    turns = [_turns_of(r, decode) for r in rollouts]
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
