"""The local runtime: engine, verifiers and learner in one process. The HF engine shares the learner's module, so
a weight sync only moves the version (the HybridFlow actor that both generates and trains); an engine with its own
copy (vLLM) takes the weights streamed from the learner."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from verity.rollout.engine import Engine, SamplingParams
from verity.rollout.episode import EpisodeRunner, single_turn_rollouts
from verity.rollout.sync_check import SyncCheck, synced, text_probe
from verity.rollout.tree_search import TreeSearch
from verity.runtime.base import RuntimeSpec, Scoring, WeightSource, WorkerRestart
from verity.types import Item, Rollout


def build_local_runtime(spec: RuntimeSpec) -> LocalRuntime:
    cfg = spec.cfg
    tree = None
    if cfg.rollout.strategy == "tree":
        tree = TreeSearch(spec.engine, spec.executor.score, cfg.rollout.tree, cfg.eval.threshold)
    return LocalRuntime(spec.engine, spec.executor, spec.episodes, cfg.rollout.sync_tolerance, tree)


class LocalRuntime:
    def __init__(
        self,
        engine: Engine,
        executor: Scoring,
        episodes: EpisodeRunner | None = None,
        sync_tolerance: float = 0.05,
        tree: TreeSearch | None = None,
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.episodes = episodes
        self.tree = tree
        self.sync_tolerance = sync_tolerance
        self.timings: dict[str, float] = {}

    def rollout(self, items: list[Item], prompt_ids: list[list[int]], params: SamplingParams) -> list[Rollout]:
        """Generate ``params.n`` completions per item and score them; phase times land in ``timings``. With an
        environment, the episodes are played (the environment scores them) and ``prompt_ids`` are unused: each
        episode's prompt comes from its environment's ``reset``. With tree search (``rollout.strategy: tree``) each
        item's group is the paths of its search tree, scored as the tree grows."""
        start = time.perf_counter()
        if self.tree is not None:
            rollouts = self.tree.run(items, prompt_ids, params)
            self.timings.update({"time/generate": time.perf_counter() - start, "time/score": 0.0})
            self.timings.update(self.tree.stats)
            return rollouts
        if self.episodes is not None:
            rollouts = self.episodes.run(items, params)
            self.timings.update({"time/generate": time.perf_counter() - start, "time/score": 0.0})
            self.timings.update(self.episodes.stats)
            return rollouts
        rollouts = single_turn_rollouts(self.engine, items, prompt_ids, params)
        scored = time.perf_counter()
        scores = self.executor.score([r.item for r in rollouts], [r.completion.text for r in rollouts])
        self.timings["time/generate"] = scored - start
        self.timings["time/score"] = time.perf_counter() - scored
        return [replace(r, score=s) for r, s in zip(rollouts, scores, strict=True)]

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
        """Nothing is in flight between steps; tree search keeps its replay buffer here."""
        if self.tree is not None and self.tree.replay is not None:
            return {"replay": self.tree.replay.state_dict()}
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "replay" in state and self.tree is not None and self.tree.replay is not None:
            self.tree.replay.load_state_dict(state["replay"])

    def close(self) -> None:
        self.executor.close()
        self.engine.close()
