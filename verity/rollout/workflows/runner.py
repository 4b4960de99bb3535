"""Running a batch of workflow tasks: every item's ``arun`` at once on one event loop, their engine and scoring
calls batched by round.

A workflow awaits one prompt at a time; the ``RoundBatcher`` holds each call until the loop has nothing else to
run (every live ``arun`` is waiting on the engine or the verifiers), then makes one engine call per kind of
request: generations that differ only in their token limit share one ``generate`` at the largest limit (each
completion is then cut to its own), log-prob requests share one call per temperature, and scoring requests one
call. So a batch of single-turn groups is the one generate call it always was, and the rounds of multi-turn
episodes and of tree expansions stay lock-step batches, in the order the items came.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from verity.rollout.engine import Engine
from verity.rollout.workflows.base import Context, Group, Task, Workflow
from verity.types import Completion, Item, Rollout, SamplingParams, Score

Scorer = Callable[[list[Item], list[str]], list[Score]]
QUIET_PASSES = 3  # loop passes without a new request before a round is flushed


@dataclass
class _Request:
    kind: str
    key: Any
    payload: Any
    future: asyncio.Future[Any] = field(repr=False)


class RoundBatcher:
    """Collects requests of concurrent coroutines and serves them in batches once the event loop is idle.

    ``handlers[kind](key, payloads) -> results`` serves one batch of requests of one kind and key, in the order
    they were made. Idle means ``QUIET_PASSES`` passes of the loop's ready queue brought no new request: every
    coroutine that could run has reached its next wait."""

    def __init__(self, handlers: dict[str, Callable[[Any, list[Any]], list[Any]]]) -> None:
        self.handlers = handlers
        self._pending: list[_Request] = []
        self._arrivals = 0
        self._seen = 0
        self._quiet = 0
        self._ticking = False

    async def call(self, kind: str, key: Any, payload: Any) -> Any:
        loop = asyncio.get_running_loop()
        request = _Request(kind, key, payload, loop.create_future())
        self._pending.append(request)
        self._arrivals += 1
        if not self._ticking:
            self._ticking, self._quiet, self._seen = True, 0, self._arrivals
            loop.call_soon(self._tick)
        return await request.future

    def _tick(self) -> None:
        if self._arrivals != self._seen:
            self._seen, self._quiet = self._arrivals, 0
        else:
            self._quiet += 1
        if self._quiet < QUIET_PASSES:
            asyncio.get_running_loop().call_soon(self._tick)
            return
        self._ticking = False
        self._flush()

    def _flush(self) -> None:
        batches: dict[tuple[str, Any], list[_Request]] = {}
        for request in self._pending:
            batches.setdefault((request.kind, request.key), []).append(request)
        self._pending = []
        for (kind, key), requests in batches.items():
            try:
                results = self.handlers[kind](key, [r.payload for r in requests])
            except BaseException as err:  # the waiting coroutines raise it; the loop itself goes on
                for r in requests:
                    r.future.set_exception(err)
                continue
            for r, result in zip(requests, results, strict=True):
                r.future.set_result(result)


class BatchedEngine:
    """An ``Engine`` as a workflow's ``EngineClient``: calls are batched by a ``RoundBatcher``."""

    def __init__(self, engine: Engine, batcher: RoundBatcher) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.batcher = batcher

    @property
    def version(self) -> int:
        return self.engine.version

    def decode(self, token_ids: list[int]) -> str:
        return self.engine.decode(token_ids)

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> list[Completion]:
        key = replace(params, max_new_tokens=0)
        return await self.batcher.call("generate", key, (prompt_ids, params.max_new_tokens))

    async def logprobs(self, prompt_ids: list[int], completion_ids: list[int], temperature: float) -> list[float]:
        return await self.batcher.call("logprobs", temperature, (prompt_ids, completion_ids))

    def serve_generate(self, key: SamplingParams, payloads: list[tuple[list[int], int]]) -> list[list[Completion]]:
        """One ``generate`` at the largest token limit asked for; each completion cut to its own limit."""
        limit = max(m for _, m in payloads)
        outputs = self.engine.generate([ids for ids, _ in payloads], replace(key, max_new_tokens=limit))
        return [[self._cut(c, m) for c in group] for (_, m), group in zip(payloads, outputs, strict=True)]

    def serve_logprobs(self, temperature: float, payloads: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        return self.engine.logprobs([p for p, _ in payloads], [c for _, c in payloads], temperature)

    def _cut(self, completion: Completion, limit: int) -> Completion:
        if len(completion.token_ids) <= limit:
            return completion
        ids = completion.token_ids[:limit]
        cut = replace(completion, token_ids=ids, logprobs=completion.logprobs[:limit], finish_reason="length")
        cut.text = self.engine.decode(ids)
        versions = getattr(cut, "token_versions", None)
        if versions:  # a completion sampled across weight updates keeps the version of each kept token
            cut.token_versions = versions[:limit]  # type: ignore[attr-defined]
            cut.version = min(cut.token_versions, default=cut.version)  # type: ignore[attr-defined]
        return cut


def run_tasks(workflow: Workflow, engine: Engine, tasks: list[Task], score: Scorer) -> list[Group]:
    """Every task's group, in task order: the tasks' ``arun`` run concurrently, their calls batched by round."""
    if not tasks:
        return []

    async def run_all() -> list[Group]:
        client = BatchedEngine(engine, RoundBatcher({}))
        client.batcher.handlers.update(
            generate=client.serve_generate,
            logprobs=client.serve_logprobs,
            score=lambda _, pairs: score([item for item, _ in pairs], [text for _, text in pairs]),
        )
        ctx = Context(client, lambda item, text: client.batcher.call("score", None, (item, text)))
        return list(await asyncio.gather(*(workflow.arun(task, ctx) for task in tasks)))

    return asyncio.run(run_all())


def plan_tasks(
    workflow: Workflow, items: list[Item], prompt_ids: list[list[int]], params: SamplingParams
) -> list[Task]:
    """The driver's tasks for a batch: each item with its prompt, the sampling and the workflow's plan for it."""
    plans = workflow.plan(items)
    return [Task(it, ids, params, plan) for it, ids, plan in zip(items, prompt_ids, plans, strict=True)]


def score_groups(groups: list[Group], score: Scorer) -> int:
    """Score the rollouts of the groups their workflow left unscored, in one call, and mark them scored; returns
    how many rollouts that was."""
    todo = [g for g in groups if not g.scored]
    flat = [r for g in todo for r in g.rollouts]
    scores = score([r.item for r in flat], [r.completion.text for r in flat]) if flat else []
    it = iter(scores)
    for group in todo:
        group.rollouts = [replace(r, score=next(it)) for r in group.rollouts]
        group.scored = True
    return len(flat)


def flatten(groups: list[Group]) -> list[Rollout]:
    """The groups' rollouts in order, group i's with ``group = i``."""
    return [replace(r, group=g) for g, group in enumerate(groups) for r in group.rollouts]
