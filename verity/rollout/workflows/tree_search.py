"""Tree-search rollouts (``rollout.workflow: tree``): DeepSearch (Wu et al. 2025, arXiv:2509.25454) as a rollout
workflow.

Each prompt grows a tree whose ``params.n`` root-to-terminal paths become its group. An expansion picks the open
node with the highest frontier score across the tree (``verity.rollout.workflows.tree.select_frontier``), samples
``width`` continuations of its prefix to their end (the runner batches the expansions of all trees of a round into
one generate call), splits each into steps (``step_delimiter``, ``step_tokens``, ``max_depth``) and scores the new
terminals with the verifiers. The expansion's correct paths are backed up, or, when it found none, its most
confident wrong path (Eqs. 2-5).

Each path comes out as a ``Rollout`` with one ``Turn`` per step whose reward is the step's value: the terminal's
``q(s_end) = +-1`` (Eq. 4) on the last step, the soft-clipped backed-up q-value on the others (Eq. 13). The
``tree_grpo`` estimator turns these into token advantages ``q(s_j) - mu`` (Eq. 15).

The replay buffer (``verity.rollout.workflows.replay``) is state that spans problems, so it lives in the driver's
copy of the workflow: ``plan`` hands a cached problem its cached solution, and that problem skips the tree (its
group is the cached solution, its behaviour log-probs those of the current policy, plus ``n - 1`` direct samples,
each one step valued by its outcome); ``observe`` offers the buffer each tree's most confident correct path and
applies the eviction rule, so local and Ray runs keep one buffer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any

from verity.rollout.workflows.base import Context, Group, Task, Workflow, WorkflowSpec, register_workflow
from verity.rollout.workflows.replay import CachedSolution, ReplayBuffer
from verity.rollout.workflows.tree import (
    Node,
    back_up,
    mean_entropy,
    most_confident,
    path_to,
    select_frontier,
    soft_clip,
    split_steps,
    terminal_value,
)
from verity.types import Completion, Item, Rollout, Score, Turn


def problem_key(item: Item) -> str:
    """The replay buffer's key: the task and the prompt text."""
    return f"{item.task}\n{item.prompt}"


@dataclass
class _Tree:
    """One prompt's tree: node 0 is the root; ``terminals`` lists the leaves in the order they were sampled and
    ``scores`` their verifiers' scores."""

    item: Item
    prompt_ids: list[int]
    nodes: list[Node] = field(default_factory=lambda: [Node(None, 0)])
    terminals: list[int] = field(default_factory=list)
    scores: dict[int, Score] = field(default_factory=dict)
    expansions: int = 0

    def solved(self, leaf: int, threshold: float) -> bool:
        reward = self.nodes[leaf].reward
        return reward is not None and reward >= threshold

    def tokens(self, index: int) -> list[int]:
        """Completion tokens from the root down to node ``index``."""
        return [t for i in path_to(self.nodes, index) for t in self.nodes[i].tokens]


@dataclass(frozen=True)
class _Searched:
    """What a grown tree tells the driver: its numbers for the metrics, and its offer to the replay buffer."""

    nodes: int
    expansions: int
    path_steps: list[int]
    solved: bool
    solution: CachedSolution | None
    share_correct: float


@dataclass(frozen=True)
class _Replayed:
    """What a replayed problem tells the driver: the share of its direct samples that were correct."""

    share_correct: float


@register_workflow("tree")
class TreeSearch(Workflow):
    """Grows one tree per item and scores its terminals as it grows. ``replay`` (the driver's) holds the cached
    solutions (None when disabled)."""

    def __init__(self, spec: WorkflowSpec) -> None:
        super().__init__(spec)
        self.cfg = spec.cfg.rollout.tree
        self.threshold = spec.cfg.eval.threshold
        replay = self.cfg.replay
        self.replay = ReplayBuffer(replay.capacity, replay.threshold) if replay.enabled else None
        self._ends_step: dict[int, bool] = {}

    @classmethod
    def check(cls, run: Any) -> list[str]:
        if run.env is not None:
            return ["rollout.workflow=tree is for single-turn tasks; remove env: or use rollout.workflow=single"]
        return []

    # -- the driver's side: the replay buffer ------------------------------------------------------------------

    def plan(self, items: list[Item]) -> list[Any]:
        if self.replay is None:
            return [None] * len(items)
        self.replay.reset_counts()
        return [self.replay.get(problem_key(item)) for item in items]

    def observe(self, groups: list[Group]) -> dict[str, float]:
        searched = [(g, g.note) for g in groups if isinstance(g.note, _Searched)]
        replayed = [(g, g.note) for g in groups if isinstance(g.note, _Replayed)]
        if self.replay is not None:
            for group, note in searched:
                self.replay.after_search(problem_key(group.rollouts[0].item), note.solution, note.share_correct)
            for group, note in replayed:
                self.replay.after_replay(problem_key(group.rollouts[0].item), note.share_correct)
        stats = {"tree/replayed_groups": float(len(replayed))}
        if searched:
            notes = [note for _, note in searched]
            paths = [steps for note in notes for steps in note.path_steps]
            stats |= {
                "tree/nodes": sum(n.nodes for n in notes) / len(notes),
                "tree/expansions": sum(n.expansions for n in notes) / len(notes),
                "tree/steps_per_path": sum(paths) / max(len(paths), 1),
                "tree/solved": sum(n.solved for n in notes) / len(notes),
            }
        if self.replay is not None:
            stats |= {
                "tree/buffer_size": float(len(self.replay)),
                "tree/buffer_added": float(self.replay.added),
                "tree/buffer_evicted": float(self.replay.evicted),
            }
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {"replay": self.replay.state_dict()} if self.replay is not None else {}

    def load_state_dict(self, state: Any) -> None:
        if "replay" in state and self.replay is not None:
            self.replay.load_state_dict(state["replay"])

    # -- one item, where the engine is -------------------------------------------------------------------------

    async def arun(self, task: Task, ctx: Context) -> Group:
        if isinstance(task.plan, CachedSolution):
            return await self._replay(task, task.plan, ctx)
        tree = _Tree(task.item, task.prompt_ids)
        await self._grow(tree, task, ctx)
        return Group(self._paths(tree, ctx), scored=True, note=self._searched(tree, ctx))

    async def _grow(self, tree: _Tree, task: Task, ctx: Context) -> None:
        """Expand the tree until it has ``params.n`` terminals."""
        cfg, params = self.cfg, task.params
        weights = (cfg.quality_weight, cfg.entropy_weight, cfg.depth_weight)
        while (missing := params.n - len(tree.terminals)) > 0:
            node = select_frontier(tree.nodes, cfg.width, cfg.max_depth, weights)
            # No open node (every path one step long): the root is sampled again.
            await self._expand(tree, max(node, 0), replace(params, n=min(cfg.width, missing)), ctx)

    async def _expand(self, tree: _Tree, node: int, params: Any, ctx: Context) -> None:
        """One expansion of ``node``: ``params.n`` continuations of its prefix, each inserted as a chain of steps
        ending in a terminal; then the new terminals are scored and backed up."""
        prefix = tree.tokens(node)
        room = max(1, params.max_new_tokens - len(prefix))
        completions = await ctx.engine.generate(tree.prompt_ids + prefix, replace(params, max_new_tokens=room))
        tree.expansions += 1
        leaves = [self._insert(tree, node, c, room, ctx) for c in completions]
        texts = [ctx.engine.decode(tree.tokens(leaf)) for leaf in leaves]
        scores = await asyncio.gather(*(ctx.score(tree.item, text) for text in texts))
        for leaf, score in zip(leaves, scores, strict=True):
            tree.scores[leaf] = score
            tree.nodes[leaf].reward = score.value
        correct = [leaf for leaf in leaves if tree.solved(leaf, self.threshold)]
        for leaf in correct or [most_confident(tree.nodes, leaves)]:
            back_up(tree.nodes, leaf, 1.0 if correct else -1.0, self.cfg.gamma_min)

    def _insert(self, tree: _Tree, node: int, completion: Completion, room: int, ctx: Context) -> int:
        """Hang ``completion`` (cut to ``room`` tokens) under ``node`` as a chain of steps; returns its leaf."""
        tokens, logprobs, finish = completion.token_ids, completion.logprobs, completion.finish_reason
        if len(tokens) > room:
            tokens, logprobs, finish = tokens[:room], logprobs[:room], "length"
        depth = tree.nodes[node].depth
        ends_step = lambda token: self._is_delimiter(token, ctx)  # noqa: E731
        spans = split_steps(tokens, ends_step, self.cfg.step_tokens, self.cfg.max_depth - depth)
        parent = node
        for start, end in spans:
            depth += 1
            tree.nodes.append(Node(parent, depth, list(tokens[start:end]), list(logprobs[start:end])))
            tree.nodes[parent].children.append(len(tree.nodes) - 1)
            parent = len(tree.nodes) - 1
        tree.nodes[parent].finish = finish
        tree.terminals.append(parent)
        return parent

    def _is_delimiter(self, token: int, ctx: Context) -> bool:
        delimiter = self.cfg.step_delimiter
        if not delimiter:
            return False
        if token not in self._ends_step:
            self._ends_step[token] = delimiter in ctx.engine.decode([token])
        return self._ends_step[token]

    def _searched(self, tree: _Tree, ctx: Context) -> _Searched:
        """The tree's numbers, and its offer to the replay buffer: the most confident correct path, if any."""
        correct = [leaf for leaf in tree.terminals if tree.solved(leaf, self.threshold)]
        solution = None
        if correct:
            best = min(correct, key=lambda leaf: mean_entropy(tree.nodes, path_to(tree.nodes, leaf)))
            tokens = tree.tokens(best)
            solution = CachedSolution(tuple(tokens), ctx.engine.decode(tokens))
        return _Searched(
            nodes=len(tree.nodes) - 1,
            expansions=tree.expansions,
            path_steps=[len(path_to(tree.nodes, leaf)) for leaf in tree.terminals],
            solved=bool(correct),
            solution=solution,
            share_correct=len(correct) / max(len(tree.terminals), 1),
        )

    def _paths(self, tree: _Tree, ctx: Context) -> list[Rollout]:
        """One rollout per trained terminal (``paths``): the path's tokens, one turn per step valued as the module
        docstring says."""
        out = []
        for leaf in tree.terminals:
            if self.cfg.paths == "backed_up" and not tree.nodes[leaf].backed_up:
                continue
            path = path_to(tree.nodes, leaf)
            tokens, logprobs, turns = [], [], []
            for index in path:
                node = tree.nodes[index]
                value = soft_clip(node.q, self.cfg.q_temperature, self.cfg.q_max)
                if index == leaf:
                    value = terminal_value(tree.scores[leaf].value, self.threshold)
                turns.append(Turn(len(tokens), len(tokens) + len(node.tokens), value))
                tokens += node.tokens
                logprobs += node.logprobs
            text = ctx.engine.decode(tokens)
            finish = tree.nodes[leaf].finish or "length"
            completion = Completion(tokens, logprobs, text, finish, ctx.engine.version)
            out.append(Rollout(tree.item, 0, tree.prompt_ids, completion, tree.scores[leaf], None, turns))
        return out

    async def _replay(self, task: Task, cached: CachedSolution, ctx: Context) -> Group:
        """A cached problem: the cached solution (behaviour log-probs from the current policy) and ``params.n - 1``
        direct samples, each one step valued by its outcome."""
        params = task.params
        logprobs, direct = await asyncio.gather(
            ctx.engine.logprobs(task.prompt_ids, list(cached.tokens), params.temperature),
            ctx.engine.generate(task.prompt_ids, replace(params, n=params.n - 1)) if params.n > 1 else _none(),
        )
        first = Completion(list(cached.tokens), logprobs, cached.text, "stop", ctx.engine.version)
        completions = [first, *direct]
        scores = await asyncio.gather(*(ctx.score(task.item, c.text) for c in completions))
        rollouts = []
        for completion, score in zip(completions, scores, strict=True):
            turn = Turn(0, len(completion.token_ids), terminal_value(score.value, self.threshold))
            rollouts.append(Rollout(task.item, 0, task.prompt_ids, completion, score, None, [turn]))
        samples = rollouts[1:]
        share = sum(r.reward >= self.threshold for r in samples) / len(samples) if samples else 0.0
        return Group(rollouts, scored=True, note=_Replayed(share))


async def _none() -> list[Completion]:
    return []
