"""Tree-search rollouts (``rollout.strategy: tree``): DeepSearch (Wu et al. 2025, arXiv:2509.25454) as a rollout
strategy of the loop.

Each prompt grows a tree whose ``params.n`` root-to-terminal paths become its group. An expansion picks the open
node with the highest frontier score across the tree (``verity.rollout.tree.select_frontier``), samples
``width`` continuations of its prefix to their end in one generate call (all trees expand together), splits each
into steps (``step_delimiter``, ``step_tokens``, ``max_depth``) and scores the new terminals with the verifiers.
The expansion's correct paths are backed up, or, when it found none, its most confident wrong path (Eqs. 2-5).

Each path comes out as a ``Rollout`` with one ``Turn`` per step whose reward is the step's value: the terminal's
``q(s_end) = +-1`` (Eq. 4) on the last step, the soft-clipped backed-up q-value on the others (Eq. 13). The
``tree_grpo`` estimator turns these into token advantages ``q(s_j) - mu`` (Eq. 15). Problems in the replay buffer
(``verity.rollout.replay``) skip the tree: their group is the cached solution, its behaviour log-probs those of the
current policy, plus ``n - 1`` direct samples, each one step valued by its outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from verity.rollout.config import TreeConfig
from verity.rollout.engine import Engine, SamplingParams
from verity.rollout.replay import CachedSolution, ReplayBuffer
from verity.rollout.tree import (
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

Scorer = Callable[[list[Item], list[str]], list[Score]]


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


class TreeSearch:
    """Grows one tree per item with ``engine`` and scores terminals with ``score``; ``stats`` describes the last
    ``run`` (``tree/*`` metrics) and ``replay`` holds the cached solutions (None when disabled)."""

    def __init__(self, engine: Engine, score: Scorer, cfg: TreeConfig, threshold: float) -> None:
        self.engine = engine
        self.score = score
        self.cfg = cfg
        self.threshold = threshold
        self.replay = ReplayBuffer(cfg.replay.capacity, cfg.replay.threshold) if cfg.replay.enabled else None
        self.stats: dict[str, float] = {}
        self._ends_step: dict[int, bool] = {}

    def run(self, items: list[Item], prompt_ids: list[list[int]], params: SamplingParams) -> list[Rollout]:
        """``params.n`` scored paths per item, group i for item i."""
        if self.replay is not None:
            self.replay.reset_counts()
        cached = [self.replay.get(problem_key(it)) if self.replay is not None else None for it in items]
        grown = [g for g, c in enumerate(cached) if c is None]
        trees = self._grow([_Tree(items[g], prompt_ids[g]) for g in grown], params)
        rollouts = [replace(r, group=g) for g, tree in zip(grown, trees, strict=True) for r in self._paths(tree)]
        replayed = [(g, c) for g, c in enumerate(cached) if c is not None]
        rollouts += self._replayed(items, prompt_ids, replayed, params)
        self.stats = self._metrics(trees, len(replayed))
        return sorted(rollouts, key=lambda r: r.group)

    # -- growing trees -----------------------------------------------------------------------------------------

    def _grow(self, trees: list[_Tree], params: SamplingParams) -> list[_Tree]:
        """Expand every tree, all together, until each has ``params.n`` terminals; then offer the replay buffer
        each tree's most confident correct path."""
        cfg = self.cfg
        weights = (cfg.quality_weight, cfg.entropy_weight, cfg.depth_weight)
        while True:
            picks: dict[int, list[tuple[_Tree, int]]] = {}  # branches to grow -> (tree, node)
            for tree in trees:
                missing = params.n - len(tree.terminals)
                if missing > 0:
                    node = select_frontier(tree.nodes, cfg.width, cfg.max_depth, weights)
                    # No open node (every path one step long): the root is sampled again.
                    picks.setdefault(min(cfg.width, missing), []).append((tree, max(node, 0)))
            if not picks:
                break
            for count, batch in picks.items():
                self._expand(batch, replace(params, n=count))
        for tree in trees:
            self._offer(tree)
        return trees

    def _expand(self, batch: list[tuple[_Tree, int]], params: SamplingParams) -> None:
        """One expansion of each (tree, node): ``params.n`` continuations of the node's prefix, each inserted as a
        chain of steps ending in a terminal; then the new terminals are scored and backed up."""
        prefixes = [tree.tokens(node) for tree, node in batch]
        rooms = [max(1, params.max_new_tokens - len(p)) for p in prefixes]
        outputs = self.engine.generate(
            [tree.prompt_ids + p for (tree, _), p in zip(batch, prefixes, strict=True)],
            replace(params, max_new_tokens=max(rooms)),
        )
        new: list[tuple[_Tree, list[int]]] = []
        for (tree, node), room, completions in zip(batch, rooms, outputs, strict=True):
            tree.expansions += 1
            new.append((tree, [self._insert(tree, node, c, room) for c in completions]))
        leaves = [(tree, leaf) for tree, ls in new for leaf in ls]
        texts = [self.engine.decode(tree.tokens(leaf)) for tree, leaf in leaves]
        for (tree, leaf), score in zip(leaves, self.score([t.item for t, _ in leaves], texts), strict=True):
            tree.scores[leaf] = score
            tree.nodes[leaf].reward = score.value
        for tree, ls in new:
            correct = [leaf for leaf in ls if tree.solved(leaf, self.threshold)]
            for leaf in correct or [most_confident(tree.nodes, ls)]:
                back_up(tree.nodes, leaf, 1.0 if correct else -1.0, self.cfg.gamma_min)

    def _insert(self, tree: _Tree, node: int, completion: Completion, room: int) -> int:
        """Hang ``completion`` (cut to ``room`` tokens) under ``node`` as a chain of steps; returns its leaf."""
        tokens, logprobs, finish = completion.token_ids, completion.logprobs, completion.finish_reason
        if len(tokens) > room:
            tokens, logprobs, finish = tokens[:room], logprobs[:room], "length"
        depth = tree.nodes[node].depth
        spans = split_steps(tokens, self._is_delimiter, self.cfg.step_tokens, self.cfg.max_depth - depth)
        parent = node
        for start, end in spans:
            depth += 1
            tree.nodes.append(Node(parent, depth, list(tokens[start:end]), list(logprobs[start:end])))
            tree.nodes[parent].children.append(len(tree.nodes) - 1)
            parent = len(tree.nodes) - 1
        tree.nodes[parent].finish = finish
        tree.terminals.append(parent)
        return parent

    def _is_delimiter(self, token: int) -> bool:
        delimiter = self.cfg.step_delimiter
        if not delimiter:
            return False
        if token not in self._ends_step:
            self._ends_step[token] = delimiter in self.engine.decode([token])
        return self._ends_step[token]

    def _offer(self, tree: _Tree) -> None:
        if self.replay is None:
            return
        correct = [leaf for leaf in tree.terminals if tree.solved(leaf, self.threshold)]
        solution = None
        if correct:
            best = min(correct, key=lambda leaf: mean_entropy(tree.nodes, path_to(tree.nodes, leaf)))
            tokens = tree.tokens(best)
            solution = CachedSolution(tuple(tokens), self.engine.decode(tokens))
        self.replay.after_search(problem_key(tree.item), solution, len(correct) / max(len(tree.terminals), 1))

    # -- rollouts ----------------------------------------------------------------------------------------------

    def _paths(self, tree: _Tree) -> list[Rollout]:
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
                value = self._clip(node.q)
                if index == leaf:
                    value = terminal_value(tree.scores[leaf].value, self.threshold)
                turns.append(Turn(len(tokens), len(tokens) + len(node.tokens), value))
                tokens += node.tokens
                logprobs += node.logprobs
            text = self.engine.decode(tokens)
            finish = tree.nodes[leaf].finish or "length"
            completion = Completion(tokens, logprobs, text, finish, self.engine.version)
            out.append(Rollout(tree.item, 0, tree.prompt_ids, completion, tree.scores[leaf], None, turns))
        return out

    def _clip(self, q: float) -> float:
        return soft_clip(q, self.cfg.q_temperature, self.cfg.q_max)

    def _replayed(
        self,
        items: list[Item],
        prompt_ids: list[list[int]],
        replayed: list[tuple[int, CachedSolution]],
        params: SamplingParams,
    ) -> list[Rollout]:
        """Cached problems: the cached solution (behaviour log-probs from the current policy) and ``params.n - 1``
        direct samples per group, each one step valued by its outcome; then the buffer's eviction rule."""
        if not replayed:
            return []
        prompts = [prompt_ids[g] for g, _ in replayed]
        cached_logprobs = self.engine.logprobs(prompts, [list(c.tokens) for _, c in replayed], params.temperature)
        direct: list[list[Completion]] = [[] for _ in replayed]
        if params.n > 1:
            direct = self.engine.generate(prompts, replace(params, n=params.n - 1))
        rollouts = []
        for (g, cached), lps, samples in zip(replayed, cached_logprobs, direct, strict=True):
            first = Completion(list(cached.tokens), lps, cached.text, "stop", self.engine.version)
            rollouts += [Rollout(items[g], g, prompt_ids[g], c) for c in [first, *samples]]
        scores = self.score([r.item for r in rollouts], [r.completion.text for r in rollouts])
        out = []
        for r, s in zip(rollouts, scores, strict=True):
            turn = Turn(0, len(r.completion.token_ids), terminal_value(s.value, self.threshold))
            out.append(replace(r, score=s, turns=[turn]))
        for g, _ in replayed if self.replay is not None else []:
            samples = [r for r in out if r.group == g][1:]
            share = sum(r.reward >= self.threshold for r in samples) / len(samples) if samples else 0.0
            self.replay.after_replay(problem_key(items[g]), share)
        return out

    def _metrics(self, trees: list[_Tree], replayed: int) -> dict[str, float]:
        stats = {"tree/replayed_groups": float(replayed)}
        if trees:
            solved = [[t.solved(leaf, self.threshold) for leaf in t.terminals] for t in trees]
            paths = [len(path_to(t.nodes, leaf)) for t in trees for leaf in t.terminals]
            stats |= {
                "tree/nodes": sum(len(t.nodes) - 1 for t in trees) / len(trees),
                "tree/expansions": sum(t.expansions for t in trees) / len(trees),
                "tree/steps_per_path": sum(paths) / max(len(paths), 1),
                "tree/solved": sum(any(s) for s in solved) / len(trees),
            }
        if self.replay is not None:
            stats |= {
                "tree/buffer_size": float(len(self.replay)),
                "tree/buffer_added": float(self.replay.added),
                "tree/buffer_evicted": float(self.replay.evicted),
            }
        return stats
