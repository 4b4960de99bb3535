"""DeepSearch's tree math on hand-computed values: frontier scores and selection, entropy selection, the
constrained backup, soft clipping and step splitting."""

import math

import pytest

from verity.rollout.workflows.tree import (
    Node,
    back_up,
    backup_value,
    depth_decay,
    frontier_score,
    mean_entropy,
    most_confident,
    open_nodes,
    path_to,
    select_frontier,
    soft_clip,
    split_steps,
    terminal_value,
)

PAPER_WEIGHTS = (0.4, 0.0, 0.01)


def test_frontier_score_adds_quality_uncertainty_and_depth() -> None:
    # 0.4 tanh(0.5) + 0.2 * 1.0 + 0.01 sqrt(2 / 8) = 0.18484686 + 0.2 + 0.005
    assert frontier_score(0.5, 1.0, 2, 8, (0.4, 0.2, 0.01)) == pytest.approx(0.38984686, abs=1e-8)
    assert frontier_score(-2.0, 0.0, 8, 8, PAPER_WEIGHTS) == pytest.approx(0.4 * math.tanh(-2.0) + 0.01)


def _small_tree() -> list[Node]:
    """root -> 1 -> 3 and root -> 2 -> 4; nodes 3 and 4 are open leaves, node 5 under 1 is terminal."""
    nodes = [
        Node(None, 0, children=[1, 2]),
        Node(0, 1, [11], [-0.1], children=[3, 5], q=1.0, visits=2),  # Q = 0.5
        Node(0, 1, [12], [-0.5], children=[4], q=-1.0, visits=1),  # Q = -1
        Node(1, 2, [13], [-2.0]),
        Node(2, 2, [14], [-0.3]),
        Node(1, 2, [15], [-0.1], finish="stop", reward=1.0),
    ]
    return nodes


def test_open_nodes_are_non_terminal_and_not_yet_branched() -> None:
    nodes = _small_tree()
    assert open_nodes(nodes, width=2, max_depth=4) == [2, 3, 4]  # root and node 1 have 2 children; 5 is terminal
    assert open_nodes(nodes, width=3, max_depth=2) == [0, 1, 2]  # depth-2 nodes sit at the depth limit


def test_select_frontier_prefers_the_child_of_a_valuable_parent() -> None:
    nodes = _small_tree()
    # node 2: 0.4 tanh(0) + 0.01 sqrt(1/4) = 0.005; node 3: 0.4 tanh(0.5) + 0.01 sqrt(2/4) = 0.19192;
    # node 4: 0.4 tanh(-1) + 0.00707 = -0.29757
    assert select_frontier(nodes, 2, 4, PAPER_WEIGHTS) == 3
    # A negative entropy weight prefers confident steps: node 3 (H = 2.0) drops to -1.808, node 2 (H = 0.5) is
    # at -0.495 and node 4 (H = 0.3) at -0.59757.
    assert select_frontier(nodes, 2, 4, (0.4, -1.0, 0.01)) == 2


def test_select_frontier_of_a_tree_with_nothing_open_is_minus_one() -> None:
    nodes = [Node(None, 0, children=[1]), Node(0, 1, [3], [-0.2], finish="stop", reward=0.0)]
    assert select_frontier(nodes, 1, 4, PAPER_WEIGHTS) == -1


def test_node_entropy_is_the_negative_mean_log_prob() -> None:
    assert Node(0, 1, [1, 2], [-0.5, -1.5]).entropy == pytest.approx(1.0)
    assert Node(None, 0).entropy == 0.0


def test_most_confident_leaf_has_the_lowest_mean_path_entropy() -> None:
    nodes = [
        Node(None, 0, children=[1, 3]),
        Node(0, 1, [1, 1], [-1.0, -1.0], children=[2]),  # H = 1.0
        Node(1, 2, [2], [-0.5], finish="stop", reward=0.0),  # H = 0.5: path mean 0.75
        Node(0, 1, [3], [-0.2], children=[4]),  # H = 0.2
        Node(3, 2, [4, 4], [-0.4, -0.2], finish="stop", reward=0.0),  # H = 0.3: path mean 0.25
    ]
    assert path_to(nodes, 4) == [3, 4]
    assert mean_entropy(nodes, [1, 2]) == pytest.approx(0.75)
    assert mean_entropy(nodes, [3, 4]) == pytest.approx(0.25)
    assert most_confident(nodes, [2, 4]) == 4


def test_depth_decay_weights_late_steps_more_and_floors_at_gamma_min() -> None:
    assert depth_decay(1, 4) == 0.25
    assert depth_decay(4, 4) == 1.0
    assert depth_decay(1, 20) == 0.1  # 0.05 is below gamma_min
    assert depth_decay(1, 20, gamma_min=0.0) == 0.05


@pytest.mark.parametrize(
    ("q_prev", "q_end", "gamma", "expected"),
    [
        (0.3, 1.0, 0.5, 0.8),  # same sign: accumulate
        (-0.3, -1.0, 0.5, -0.8),
        (0.0, -1.0, 0.25, -0.25),  # an unvisited node takes the sign of the first result
        (-0.3, 1.0, 0.5, 0.5),  # a correct result resets a negative value
        (0.3, -1.0, 0.5, 0.3),  # a wrong result leaves a positive value alone
    ],
)
def test_backup_value_follows_the_constrained_rule(
    q_prev: float, q_end: float, gamma: float, expected: float
) -> None:
    assert backup_value(q_prev, q_end, gamma) == pytest.approx(expected)


def test_back_up_along_paths_that_share_a_prefix() -> None:
    nodes = [
        Node(None, 0, children=[1]),
        Node(0, 1, [1], [-0.1], children=[2]),
        Node(1, 2, [2], [-0.1], children=[3, 5]),
        Node(2, 3, [3], [-0.1], children=[4]),
        Node(3, 4, [4], [-0.1], finish="stop", reward=1.0),
        Node(2, 3, [5], [-0.1], children=[6]),
        Node(5, 4, [6], [-0.1], finish="stop", reward=0.0),
    ]
    back_up(nodes, 4, 1.0)  # gamma(i, 4) = 0.25, 0.5, 0.75
    assert [nodes[i].q for i in (1, 2, 3, 4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    back_up(nodes, 6, -1.0)  # the shared positive nodes keep their values; node 5 goes to -0.75
    assert [nodes[i].q for i in (1, 2, 5, 6)] == pytest.approx([0.25, 0.5, -0.75, -1.0])
    assert [nodes[i].visits for i in range(1, 7)] == [2, 2, 1, 1, 1, 1]
    back_up(nodes, 4, 1.0)
    assert [nodes[i].q for i in (1, 2, 3)] == pytest.approx([0.5, 1.0, 1.5])
    assert nodes[4].backed_up and nodes[6].backed_up


def test_terminal_value_and_soft_clip() -> None:
    assert terminal_value(1.0, 1.0) == 1.0
    assert terminal_value(0.5, 1.0) == -1.0
    assert soft_clip(2.0) == pytest.approx(0.96402758)
    assert soft_clip(1.0, temperature=2.0, q_max=0.5) == pytest.approx(0.5 * math.tanh(0.5))
    assert soft_clip(-3.0) == pytest.approx(-math.tanh(3.0))


def test_split_steps_by_delimiter_length_and_depth() -> None:
    newline = {9}.__contains__
    tokens = [5, 9, 6, 9, 7]
    assert split_steps(tokens, newline, 0, 8) == [(0, 2), (2, 4), (4, 5)]
    assert split_steps(tokens, lambda t: False, 2, 8) == [(0, 2), (2, 4), (4, 5)]
    assert split_steps(tokens, newline, 0, 2) == [(0, 2), (2, 5)]  # the last allowed step takes the rest
    assert split_steps(tokens, newline, 0, 1) == [(0, 5)]
    assert split_steps([5, 9], newline, 0, 8) == [(0, 2)]
    assert split_steps([], newline, 0, 8) == [(0, 0)]
