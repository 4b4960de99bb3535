"""The search tree of DeepSearch (Wu et al. 2025, arXiv:2509.25454) and its math, as pure functions.

A tree grows over the reasoning steps of one prompt: the root is the prompt, each node one step (a span of
completion tokens), and each root-to-terminal path one completion. ``verity.rollout.workflows.tree_search`` grows
trees with an engine and turns their paths into rollouts; this module holds the node bookkeeping and every formula:

- ``frontier_score``: which open node to expand next, across the whole tree (Eq. 7).
- ``mean_entropy`` / ``most_confident``: the root-to-leaf average entropy and the most confident wrong path that
  is backed up when an expansion finds no correct one (Eq. 2).
- ``depth_decay`` / ``backup_value`` / ``back_up``: the constrained q-value backup along a path (Eqs. 3-5).
- ``soft_clip``: the tanh soft clipping of interior q-values before training (Eq. 13).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Node:
    """One step of a search tree. ``tokens``/``logprobs`` are the step's completion tokens and their behaviour
    log-probs; ``depth`` counts steps from the root (root 0); ``q`` is the backed-up value and ``visits`` how
    many backups passed through it. A terminal node ends a completion: ``finish`` is the engine's finish reason,
    ``reward`` the verifier's score of its whole path and ``backed_up`` whether its path was backed up."""

    parent: int | None
    depth: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    q: float = 0.0
    visits: int = 0
    backed_up: bool = False
    finish: str | None = None
    reward: float | None = None

    @property
    def terminal(self) -> bool:
        return self.finish is not None

    @property
    def entropy(self) -> float:
        """Monte Carlo estimate of the step's mean token entropy, ``-(1/|s|) sum_k log pi(a_k)`` over the sampled
        tokens (the paper's H(pi(s_i | o_i))); 0 for the root."""
        return -sum(self.logprobs) / len(self.logprobs) if self.logprobs else 0.0

    @property
    def mean_q(self) -> float:
        """``Q(s) = q(s) / N(s)`` (0 before any visit)."""
        return self.q / self.visits if self.visits else 0.0


def path_to(nodes: Sequence[Node], index: int) -> list[int]:
    """Node indices from the root's first step down to ``index`` (the root itself excluded)."""
    path = []
    while nodes[index].parent is not None:
        path.append(index)
        index = nodes[index].parent  # type: ignore[assignment]
    return path[::-1]


def frontier_score(
    parent_q: float, entropy: float, depth: int, max_depth: int, weights: tuple[float, float, float]
) -> float:
    """DeepSearch's global frontier priority (Eq. 7): ``F(s) = l1 tanh(Q_parent(s)) + l2 H(s) + l3
    sqrt(d(s) / d_T)`` with ``parent_q`` the parent's ``Q = q / N``, ``entropy`` the node's step entropy and
    ``weights = (l1, l2, l3)``. The paper's default is ``(0.4, 0, 0.01)``; a negative ``l2`` prefers confident
    steps, a positive one uncertain steps."""
    quality, uncertainty, deep = weights
    return quality * math.tanh(parent_q) + uncertainty * entropy + deep * math.sqrt(depth / max_depth)


def open_nodes(nodes: Sequence[Node], width: int, max_depth: int) -> list[int]:
    """The frontier: nodes that are not terminal, lie above ``max_depth`` and have fewer than ``width``
    children (the root included while it has room).

    Our departure from Eq. 6, which takes childless nodes: an expansion here runs each new branch to its end in
    one generate call, so the interior nodes of a fresh branch have one child and a childless-only frontier
    would hold nothing but terminals. A node stays open until it has been branched from (``width`` children)."""
    return [
        i
        for i, node in enumerate(nodes)
        if not node.terminal and node.depth < max_depth and len(node.children) < width
    ]


def select_frontier(nodes: Sequence[Node], width: int, max_depth: int, weights: tuple[float, float, float]) -> int:
    """``argmax_{s in frontier} F(s)`` (ties: the earliest node), or -1 when the frontier is empty."""
    best, best_score = -1, -math.inf
    for i in open_nodes(nodes, width, max_depth):
        parent = nodes[i].parent
        parent_q = nodes[parent].mean_q if parent is not None else 0.0
        score = frontier_score(parent_q, nodes[i].entropy, nodes[i].depth, max_depth, weights)
        if score > best_score:
            best, best_score = i, score
    return best


def mean_entropy(nodes: Sequence[Node], path: Sequence[int]) -> float:
    """``H(t(s)) = (1/|t|) sum_i H(s_i)``: the average of the step entropies along a root-to-leaf path (Eq. 2)."""
    return sum(nodes[i].entropy for i in path) / len(path) if path else 0.0


def most_confident(nodes: Sequence[Node], leaves: Sequence[int]) -> int:
    """The leaf whose root-to-leaf path has the lowest average entropy: ``argmin_s H(t(s))`` (Eq. 2; ties: the
    first). DeepSearch backs up this most confident wrong path when an expansion finds no correct one."""
    return min(leaves, key=lambda leaf: mean_entropy(nodes, path_to(nodes, leaf)))


def depth_decay(i: int, length: int, gamma_min: float = 0.1) -> float:
    """``gamma(i, l) = max(i / l, gamma_min)``: node i of a path whose terminal is node l (both from 1) takes
    this share of the terminal's value, more the closer it is to the end (Eq. 3)."""
    return max(i / length, gamma_min)


def backup_value(q_prev: float, q_end: float, gamma: float) -> float:
    """The constrained update of one interior node (Eq. 5): add ``gamma q_end`` when it agrees in sign with
    ``q_prev`` (or either is 0); a correct result replaces a negative value with ``gamma q_end``; a wrong result
    leaves a positive value as it is. So a node on any correct path keeps ``q >= 0``."""
    if q_prev * q_end >= 0:
        return q_prev + gamma * q_end
    if q_end > 0:
        return gamma * q_end
    return q_prev


def terminal_value(reward: float, threshold: float) -> float:
    """``q(s_end)``: +1 for a verified solution (reward at least ``threshold``), -1 otherwise (Eq. 4)."""
    return 1.0 if reward >= threshold else -1.0


def back_up(nodes: Sequence[Node], leaf: int, q_end: float, gamma_min: float = 0.1) -> None:
    """Back ``q_end`` up the path to terminal ``leaf``: each interior node i of the l-step path takes
    ``backup_value(q, q_end, depth_decay(i, l))`` and one more visit; the terminal keeps its own value."""
    path = path_to(nodes, leaf)
    length = len(path)
    for i, index in enumerate(path[:-1], start=1):
        node = nodes[index]
        node.q = backup_value(node.q, q_end, depth_decay(i, length, gamma_min))
        node.visits += 1
    nodes[leaf].q = q_end
    nodes[leaf].visits += 1
    nodes[leaf].backed_up = True


def soft_clip(q: float, temperature: float = 1.0, q_max: float = 1.0) -> float:
    """``q_max tanh(q / eps_q)``: an interior q-value squashed into ``(-q_max, q_max)`` with its order and sign
    kept, so values summed over many backups cannot blow up (Eq. 13)."""
    return q_max * math.tanh(q / temperature)


def split_steps(
    tokens: Sequence[int], ends_step: Callable[[int], bool], step_tokens: int, max_steps: int
) -> list[tuple[int, int]]:
    """Spans ``[start, end)`` of the steps of a continuation: a step ends after a token for which ``ends_step``
    holds (the step delimiter) or after ``step_tokens`` tokens (0: no limit); past ``max_steps - 1`` steps the
    last step takes the rest. An empty continuation is one empty step."""
    spans: list[tuple[int, int]] = []
    start = 0
    for k, token in enumerate(tokens):
        if len(spans) == max_steps - 1:
            break
        if ends_step(token) or (step_tokens and k + 1 - start >= step_tokens):
            spans.append((start, k + 1))
            start = k + 1
    if start < len(tokens) or not spans:
        spans.append((start, len(tokens)))
    return spans
