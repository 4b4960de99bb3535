"""The local runtime: engine, verifiers and learner in one process. The HF engine shares the learner's module, so
a weight sync only moves the version (the HybridFlow actor that both generates and trains); an engine with its own
copy (vLLM) takes the weights streamed from the learner."""

from __future__ import annotations

import time
from typing import Any

from verity.rollout.engine import Engine
from verity.rollout.sync_check import SyncCheck, synced, text_probe
from verity.rollout.workflows.base import Workflow
from verity.rollout.workflows.runner import flatten, plan_tasks, run_tasks, score_groups
from verity.runtime.base import RuntimeSpec, Scoring, WeightSource, WorkerRestart
from verity.types import Item, Rollout, SamplingParams


def build_local_runtime(spec: RuntimeSpec) -> LocalRuntime:
    return LocalRuntime(spec.engine, spec.executor, spec.workflow, spec.cfg.rollout.sync_tolerance)


class LocalRuntime:
    def __init__(
        self, engine: Engine, executor: Scoring, workflow: Workflow, sync_tolerance: float = 0.05
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.workflow = workflow
        self.sync_tolerance = sync_tolerance
        self.timings: dict[str, float] = {}

    def rollout(self, items: list[Item], prompt_ids: list[list[int]], params: SamplingParams) -> list[Rollout]:
        """Run the workflow on every item at once (a workflow that scores as it goes, such as an environment's
        episodes or tree search, uses the run's verifiers in this process), then score what it left unscored;
        phase times and the workflow's metrics land in ``timings``."""
        start = time.perf_counter()
        tasks = plan_tasks(self.workflow, items, prompt_ids, params)
        groups = run_tasks(self.workflow, self.engine, tasks, self.executor.score)
        generated = time.perf_counter()
        scored = score_groups(groups, self.executor.score)
        self.timings["time/generate"] = generated - start
        self.timings["time/score"] = time.perf_counter() - generated if scored else 0.0
        self.timings.update(self.workflow.observe(groups))
        return flatten(groups)

    def sync(self, learner: WeightSource) -> None:
        """Move the learner's weights to the engine; an engine with its own copy is verified on the probe."""
        start = time.perf_counter()
        check = None
        if not self.engine.shared:
            probe = text_probe(self.engine.tokenizer)
            check = SyncCheck(probe, learner.probe_logprobs(probe), self.sync_tolerance)
        gap = synced(self.engine, learner.weights(), learner.version, check)
        self.timings["time/sync"] = time.perf_counter() - start
        if gap is not None:
            self.timings["sync/logprob_gap"] = gap

    def restarts(self) -> list[WorkerRestart]:
        return []  # no workers

    def state_dict(self) -> dict[str, Any]:
        return {}  # nothing is in flight between steps

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def close(self) -> None:
        self.executor.close()
        self.engine.close()
