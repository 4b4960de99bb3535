"""The Workflow seam: given an engine and an item, produce that item's rollouts (AReaL's ``arun_episode``).

A workflow is one object with one async method, ``arun(task, ctx) -> Group``: the ``params.n`` rollouts of one
item (its group), generated with ``ctx.engine`` and, where the workflow scores as it goes, scored with
``ctx.score``. The runner (``verity.rollout.workflows.runner``) runs the groups of a whole batch concurrently and
batches their engine and scoring calls, so a workflow is written one item at a time and still runs as one
generate call per round. Every runtime runs every workflow: the local runtime on its engine, the Ray runtime in
its rollout actors.

State that spans items (tree search's replay buffer) lives in the driver's copy of the workflow: ``plan`` gives
each item what it needs before it is rolled out anywhere (it travels in ``Task.plan``), ``observe`` folds the
finished groups back in and returns the batch's metrics, and ``state_dict``/``load_state_dict`` checkpoint it.

A workflow is a ``Workflow`` subclass built from a ``WorkflowSpec``: a built-in is marked
``@register_workflow("name")`` (``verity.rollout.workflows.registry`` lists their modules), a user's is named by
its import path; ``rollout.workflow`` picks it.
Its class attributes are its traits, and ``check(run)`` its checks against the rest of a run's config.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from verity.registry import registered_as
from verity.types import Completion, Item, Rollout, SamplingParams, Score


@dataclass(frozen=True)
class Task:
    """One item to roll out: its prompt's token ids, how to sample (``params.n`` rollouts), what the driver's
    ``plan`` gave it, and whether it is a held-out evaluation (no training-time help such as hints)."""

    item: Item
    prompt_ids: list[int]
    params: SamplingParams
    plan: Any = None
    held_out: bool = False


@dataclass
class Group:
    """One item's rollouts. ``scored``: the workflow scored them (else the runtime's verifiers do); ``stats``:
    counts summed over the batch's groups (e.g. ``env/errors``); ``note``: what the driver's ``observe`` needs."""

    rollouts: list[Rollout]
    scored: bool = False
    stats: dict[str, float] = field(default_factory=dict)
    note: Any = None


class EngineClient(Protocol):
    """The engine as a workflow sees it: one prompt per call, awaited; the runner batches concurrent calls."""

    tokenizer: Any

    @property
    def version(self) -> int: ...

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> list[Completion]:
        """``params.n`` completions of one prompt."""
        ...

    async def logprobs(self, prompt_ids: list[int], completion_ids: list[int], temperature: float) -> list[float]:
        """Teacher-forced log-probs of ``completion_ids`` after ``prompt_ids``."""
        ...

    def decode(self, token_ids: list[int]) -> str: ...


@dataclass
class Context:
    """What ``arun`` works with: the engine, and the run's verifiers (awaited, batched like the engine)."""

    engine: EngineClient
    score: Callable[[Item, str], Awaitable[Score]]


@dataclass(frozen=True)
class WorkflowSpec:
    """What a workflow is built from: the run's ``Config`` (``cfg``: its workflow's sections), the tokenizer and a
    vision-language model's processor (None for a text model)."""

    cfg: Any
    tokenizer: Any
    processor: Any = None


class Workflow:
    """Base of every workflow. Subclasses implement ``arun``; the rest has defaults (no plan, stats summed, no
    state, no checks). Traits: ``episodic``, its rollouts are episodes (held-out evaluation plays them greedily,
    one per item) rather than completions of the item's prompt (evaluated by greedy decoding and pass@k
    sampling); ``restates``, a step may hand it restated prompts (re-thinking), since its rollouts are plain
    completions of the prompt ids it is given."""

    episodic: bool = False
    restates: bool = False

    def __init__(self, spec: WorkflowSpec) -> None:
        self.spec = spec

    @classmethod
    def check(cls, run: Any) -> list[str]:
        """What is wrong with the run's config (``run``) for this workflow, each error naming its keys."""
        return []

    async def arun(self, task: Task, ctx: Context) -> Group:
        raise NotImplementedError

    def plan(self, items: list[Item]) -> list[Any]:
        """Driver side, before the items are rolled out: what each one's ``arun`` should know (None each)."""
        return [None] * len(items)

    def observe(self, groups: list[Group]) -> dict[str, float]:
        """Driver side, after a batch: fold the groups into cross-item state; returns the batch's metrics."""
        totals: dict[str, float] = {}
        for group in groups:
            for key, value in group.stats.items():
                totals[key] = totals.get(key, 0.0) + value
        return totals

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None


WORKFLOW = "rollout workflow"  # the registry's kind


def register_workflow(name: str) -> Any:
    """Decorator marking a ``Workflow`` subclass as the built-in workflow ``name``."""
    return registered_as(WORKFLOW, name)
