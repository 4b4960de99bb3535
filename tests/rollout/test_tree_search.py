"""Tree-search rollouts with a scripted engine: which node is expanded, what is backed up, which paths come out
with which step values, and how the replay buffer replaces the tree for a cached problem."""

from dataclasses import replace
from types import SimpleNamespace

import pytest
from helpers.fake_engine import FakeEngine

from verity.rollout.config import TreeConfig
from verity.rollout.workflows.base import WorkflowSpec
from verity.rollout.workflows.replay import ReplayBuffer
from verity.rollout.workflows.runner import flatten, plan_tasks, run_tasks
from verity.rollout.workflows.tree_search import TreeSearch
from verity.types import Completion, Item, Rollout, SamplingParams, Score

ITEM = Item("sum/0", "sum", "5 + 7 =", "12")


class ScriptedEngine(FakeEngine):
    """Token t decodes to str(t); each generate call returns the next scripted completions (one list per
    prompt), with log-prob -0.1 per token unless the script gives them; teacher-forced log-probs are -0.7."""

    def __init__(self, script: list[list[list[tuple[list[int], list[float] | None]]]]) -> None:
        super().__init__()
        self.script = script
        self.calls: list[tuple[list[list[int]], SamplingParams]] = []

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        self.calls.append((prompts, params))
        out = self.script.pop(0)
        assert [len(c) for c in out] == [params.n] * len(prompts)
        return [
            [Completion(ids, lps or [-0.1] * len(ids), self.decode(ids), "stop", self.version) for ids, lps in row]
            for row in out
        ]

    def logprobs(
        self, prompts: list[list[int]], completions: list[list[int]], temperature: float
    ) -> list[list[float]]:
        return [[-0.7] * len(c) for c in completions]

    def decode(self, token_ids: list[int]) -> str:
        return "".join(str(t) for t in token_ids)


def exact(items: list[Item], texts: list[str]) -> list[Score]:
    return [Score(1.0 if text == item.answer else 0.0) for item, text in zip(items, texts, strict=True)]


class Search:
    """The tree workflow run the way a runtime runs it: planned, run on the engine (calls batched by round),
    observed; ``stats`` holds the last batch's metrics."""

    def __init__(self, engine: ScriptedEngine, cfg: TreeConfig) -> None:
        run = SimpleNamespace(rollout=SimpleNamespace(tree=cfg), eval=SimpleNamespace(threshold=1.0), env=None)
        self.workflow = TreeSearch(WorkflowSpec(run, None))
        self.engine = engine
        self.stats: dict[str, float] = {}

    @property
    def replay(self) -> ReplayBuffer | None:
        return self.workflow.replay

    def run(self, items: list[Item], prompts: list[list[int]], params: SamplingParams) -> list[Rollout]:
        groups = run_tasks(self.workflow, self.engine, plan_tasks(self.workflow, items, prompts, params), exact)
        self.stats = self.workflow.observe(groups)
        return flatten(groups)


def search(engine: ScriptedEngine, **settings: object) -> Search:
    return Search(engine, TreeConfig(width=2, step_delimiter=None, step_tokens=1, **settings))


PARAMS = SamplingParams(max_new_tokens=4, n=4)
# Expansion 1 (root): "13" (confident) and "22" (unsure), both wrong. Expansion 2: the frontier's best node is the
# first "1" (a tie at depth 1 goes to the earliest node); it gets "2" (correct) and "3".
SCRIPT = [
    [[([1, 3], [-0.1, -0.1]), ([2, 2], [-1.0, -1.0])]],
    [[([2], [-0.3]), ([3], [-0.2])]],
]


def test_the_tree_backs_up_the_confident_miss_then_the_solution() -> None:
    engine = ScriptedEngine([list(s) for s in SCRIPT])
    rollouts = search(engine, paths="all", replay={"enabled": False}).run([ITEM], [[100]], PARAMS)
    assert engine.calls[1][0] == [[100, 1]]  # expansion 2 continues the prefix "1"
    assert engine.calls[1][1].max_new_tokens == 3  # the budget left after one token
    assert [r.completion.text for r in rollouts] == ["13", "22", "12", "13"]
    assert [r.reward for r in rollouts] == [0.0, 0.0, 1.0, 0.0]
    # "1" was backed up with -1 x gamma(1, 2) = -0.5, then reset by the solution to +0.5: soft clip tanh(0.5).
    first = pytest.approx(0.46211716)
    assert [[t.reward for t in r.turns or []] for r in rollouts] == [
        [first, -1.0],
        [0.0, -1.0],
        [first, 1.0],
        [first, -1.0],
    ]
    assert [(t.start, t.end) for t in rollouts[2].turns or []] == [(0, 1), (1, 2)]
    assert rollouts[2].completion.token_ids == [1, 2] and rollouts[2].completion.logprobs == [-0.1, -0.3]
    assert {r.group for r in rollouts} == {0}


def test_backed_up_paths_only_by_default() -> None:
    engine = ScriptedEngine([list(s) for s in SCRIPT])
    tree = search(engine, replay={"enabled": False})
    rollouts = tree.run([ITEM], [[100]], PARAMS)
    assert [r.completion.text for r in rollouts] == ["13", "12"]
    assert tree.stats["tree/expansions"] == 2.0
    assert tree.stats["tree/nodes"] == 6.0
    assert tree.stats["tree/solved"] == 1.0


def test_a_cached_problem_gets_its_solution_and_direct_samples_instead_of_a_tree() -> None:
    engine = ScriptedEngine([list(s) for s in SCRIPT])
    tree = search(engine, replay={"threshold": 0.5})
    tree.run([ITEM], [[100]], PARAMS)  # 1 correct path in 4: below 0.5, so "12" is cached
    assert tree.stats["tree/buffer_added"] == 1.0
    engine.script = [[[([1, 2], None), ([3, 3], None), ([1, 3], None)]]]
    rollouts = tree.run([ITEM], [[100]], PARAMS)
    assert len(engine.calls) == 3 and engine.calls[2][1].n == 3  # one direct call for n - 1 samples
    assert [r.completion.text for r in rollouts] == ["12", "12", "33", "13"]
    assert rollouts[0].completion.logprobs == [-0.7, -0.7]  # the current policy's, teacher-forced
    assert [[t.reward for t in r.turns or []] for r in rollouts] == [[1.0], [1.0], [-1.0], [-1.0]]
    # 1 of 3 direct samples correct: below 0.5, so the problem stays cached
    assert tree.stats["tree/replayed_groups"] == 1.0 and tree.stats["tree/buffer_size"] == 1.0
    engine.script = [[[([1, 2], None), ([1, 2], None), ([1, 3], None)]]]
    tree.run([ITEM], [[100]], PARAMS)
    assert tree.stats["tree/buffer_evicted"] == 1.0 and tree.replay is not None and len(tree.replay) == 0


def test_each_tree_keeps_its_own_group_and_the_root_is_sampled_again_when_nothing_is_open() -> None:
    # One-step paths (max_depth 1): no interior node, so every expansion samples the root again.
    other = replace(ITEM, id="sum/1", prompt="6 + 6 =")
    engine = ScriptedEngine(
        [
            [[([12], None), ([3], None)], [([4], None), ([5], None)]],
            [[([6], None), ([7], None)], [([8], None), ([9], None)]],
        ]
    )
    cfg = TreeConfig(width=2, max_depth=1, step_delimiter=None, paths="all", replay={"enabled": False})
    rollouts = Search(engine, cfg).run([ITEM, other], [[100], [101]], PARAMS)
    assert engine.calls[1][0] == [[100], [101]]
    assert [(r.group, r.completion.text) for r in rollouts] == [
        (0, "12"),
        (0, "3"),
        (0, "6"),
        (0, "7"),
        (1, "4"),
        (1, "5"),
        (1, "8"),
        (1, "9"),
    ]
