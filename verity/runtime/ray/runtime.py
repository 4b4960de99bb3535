"""The Ray runtime: rollout engines and verifiers as Ray actors, the learner in the driver.

The loop is the local one; only ``rollout()`` and ``sync()`` differ.

- sync mode: a step's prompts are split into work units over the rollout actors, scored by the reward actors
  as each unit finishes, and returned in order. Unit 0 samples from the driver engine's RNG state (and hands
  it back), so with one rollout actor the samples are exactly the local runtime's.
- async mode (AReaL, Fu et al. 2025): actors keep generating while the learner trains. The first call draws
  ``max_staleness`` extra batches from ``supply`` to open the pipeline; each call then queues its own prompts
  and returns the oldest finished groups, admitting a group only while ``learner.version - version <=
  max_staleness`` where ``version`` is its oldest token's; a stale group's item is generated again. Groups
  queued, running or waiting never exceed ``(1 + max_staleness)`` batches. Train with ``algo.loss:
  decoupled_ppo``.

Every workflow runs in the rollout actors as in the local runtime (``verity.rollout.workflows.runner``); groups
a workflow left unscored go to the reward actors, scored ones (an environment's episodes, tree search) skip them.
The driver's copy of the workflow plans each item when it is queued and observes each batch when it is taken, so
state that spans items (tree search's replay buffer) is one, in the driver.

The learner stays in the driver so the loop, evaluation, sampler and checkpoints are the local runtime's
unchanged; on a GPU node the driver takes the training GPU and rollout actors request their own. A sharded
learner group (``train.strategy: fsdp2``) has its ranks in actors of its own (``ray_learners.py``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import ray
import torch
from ray.exceptions import GetTimeoutError

from verity.rollout.engine import Engine, EngineSpec
from verity.rollout.sync_check import SyncCheck, synced, text_probe
from verity.rollout.workflows.base import Group, Task, Workflow
from verity.rollout.workflows.runner import plan_tasks
from verity.runtime.base import RuntimeSpec, Scoring, Supply, WeightSource, WorkerRestart
from verity.runtime.ray.config import RayConfig
from verity.runtime.ray.pool import ActorWorkers, Job, RemoteTimeout, WeightSyncTimeout
from verity.runtime.ray.reward import RewardWorker
from verity.runtime.ray.setup import check_resources, init_ray
from verity.runtime.ray.workers import RolloutUnit, RolloutWorker
from verity.schema import ConfigError
from verity.types import Item, Rollout, SamplingParams, Score


@dataclass
class _Slot:
    """One item's task, from queueing until the trainer takes its group."""

    task: Task
    group: Group | None = None

    @property
    def done(self) -> bool:
        return self.group is not None and self.group.scored


class RayScoring:
    """The executor the loop sees: scores in the driver (evaluation, ViSurf); ``stats()`` also counts what the
    reward actors scored since the last call."""

    def __init__(self, local: Scoring) -> None:
        self.local = local
        self._remote: Counter[str] = Counter()
        self._lock = threading.Lock()

    def score(self, items: list[Item], completions: list[str]) -> list[Score]:
        return self.local.score(items, completions)

    def add(self, stats: dict[str, float]) -> None:
        with self._lock:
            self._remote.update(stats)

    def stats(self) -> dict[str, float]:
        out = self.local.stats()
        with self._lock:
            for key, value in self._remote.items():
                out[key] = out.get(key, 0.0) + value
            self._remote.clear()
        return out

    def close(self) -> None:
        self.local.close()


def build_ray_runtime(spec: RuntimeSpec, rollout_class: type = RolloutWorker) -> RayRuntime:
    """The Ray runtime of a run; it keeps the local reward executor for the driver's own scoring (evaluation,
    ViSurf) and draws its async lead from ``spec.supply``."""
    runtime = RayRuntime(
        spec.cfg, spec.engine_spec, spec.engine, spec.executor, spec.learner, spec.workflow, rollout_class
    )
    runtime.supply = spec.supply
    return runtime


class RayRuntime:
    """The ``Runtime`` protocol over Ray actors; ``supply`` draws the async lead, ``state_dict()`` holds the
    queued items. ``cfg`` is the run's ``Config``: each rollout actor builds the run's workflow from it, and
    ``workflow`` is the driver's copy (its plans and observations)."""

    def __init__(
        self,
        cfg: Any,
        engine_spec: EngineSpec,
        engine: Engine,
        executor: Scoring,
        learner: WeightSource,
        workflow: Workflow,
        rollout_class: type = RolloutWorker,
    ) -> None:
        self.rc: RayConfig = cfg.runtime.ray
        self.workflow = workflow
        self.tolerance = cfg.rollout.sync_tolerance
        self.seed = cfg.seed
        self.engine = engine  # the driver's, on the learner's module: evaluation and the sync-mode RNG
        self.executor = RayScoring(executor)
        self.timings: dict[str, float] = {}
        self.supply: Supply | None = None
        self._started_ray = init_ray(self.rc)
        try:
            check_resources(self.rc, cfg.train.learners if cfg.train.strategy == "fsdp2" else 0)
        except ConfigError:
            if self._started_ray:
                ray.shutdown()
            raise
        self._cond = threading.Condition(threading.RLock())
        self._jobs: dict[int, list[_Slot]] = {}  # rollout job id -> its slots, until scored (sync: until taken)
        self._rng_after: dict[int, torch.Tensor] = {}
        self._ready: deque[_Slot] = deque()
        self._next_job = 0
        self._lead_drawn = False
        self._error: BaseException | None = None
        self._weights: tuple[Any, int] | None = None
        rc = self.rc
        rollout_actor = ray.remote(concurrency_groups={"weights": 1})(rollout_class).options(
            num_cpus=rc.rollout_cpus, num_gpus=rc.rollout_gpus, max_restarts=0
        )
        device = "cuda" if rc.rollout_gpus > 0 else "cpu"
        # Each actor loads its own copy of the policy: the driver's spec, on the actor's device, sharing nothing.
        spec = replace(engine_spec, device=device, model=None)
        threads = rc.threads or max(1, int(rc.rollout_cpus))
        self.rollout_workers = ActorWorkers(
            "rollout",
            lambda rank: rollout_actor.remote(cfg.rollout.engine, spec, threads, cfg),
            rc.rollout_workers,
            rc.task_timeout_s,
            rc.max_restarts,
            self._give_weights,
        )
        reward_actor = ray.remote(RewardWorker).options(num_cpus=rc.reward_cpus, max_restarts=0)
        self.reward_workers = ActorWorkers(
            "reward",
            lambda rank: reward_actor.remote(cfg.reward),
            rc.reward_workers,
            rc.task_timeout_s,
            rc.max_restarts,
        )
        # Actors import torch and load the model first: a start-up wait, apart from the weight-sync limit.
        self.rollout_workers.broadcast("version", timeout=rc.task_timeout_s, setting="runtime.ray.task_timeout_s")
        self.sync(learner)
        self._stop = threading.Event()
        self._pump = threading.Thread(target=self._pump_loop, name="verity-ray-pump", daemon=True)
        self._pump.start()

    # -- weights ---------------------------------------------------------------------------------------------

    def sync(self, learner: WeightSource) -> None:
        """Put the learner's weights in the object store once; every rollout actor takes them by reference, with
        the learner's log-probs of the sync probe, and verifies itself when it adopts them. The driver's engine
        (evaluation) follows too: free when it shares the learner's module, verified when it has its own copy."""
        start = time.perf_counter()
        probe = text_probe(self.engine.tokenizer)
        check = SyncCheck(probe, learner.probe_logprobs(probe), self.tolerance)
        weights = [(k, v.detach().to("cpu", copy=True)) for k, v in learner.weights()]
        with self._cond:
            self._raise_pump_error()
            self._weights = (ray.put(weights), learner.version, check)
            self.rollout_workers.broadcast("load_weights", *self._weights, timeout=self.rc.sync_timeout_s)
            synced(self.engine, iter(weights), learner.version, check)
        self.timings["time/sync"] = time.perf_counter() - start

    def _give_weights(self, rank: int, actor: Any) -> None:
        if self._weights is None:
            return
        try:
            ray.get(actor.load_weights.remote(*self._weights), timeout=self.rc.sync_timeout_s)
        except GetTimeoutError:
            raise WeightSyncTimeout(
                f"rollout worker {rank} (restarted) did not take weights version {self._weights[1]} within "
                f"{self.rc.sync_timeout_s:g}s (runtime.ray.sync_timeout_s)"
            ) from None

    # -- rollouts --------------------------------------------------------------------------------------------

    def rollout(self, items: list[Item], prompt_ids: list[list[int]], params: SamplingParams) -> list[Rollout]:
        """Scored rollouts: ``len(items)`` groups of ``params.n``, group ids 0..len(items)-1 (async: groups of
        earlier items, see the module docstring); the workflow's metrics of the groups taken land in
        ``timings``."""
        start = time.perf_counter()
        with self._cond:
            slots = [_Slot(task) for task in plan_tasks(self.workflow, items, prompt_ids, params)]
            taken = self._take_sync(slots) if self.rc.mode == "sync" else self._take_async(slots, params)
        self.timings["time/generate"] = time.perf_counter() - start
        # Scoring overlaps generation; the reward actors' compute time is in verifier/seconds.
        self.timings["time/score"] = 0.0
        groups = [slot.group for slot in taken if slot.group is not None]
        self.timings.update(self.workflow.observe(groups))
        return [replace(r, group=g) for g, group in enumerate(groups) for r in group.rollouts]

    def _take_sync(self, slots: list[_Slot]) -> list[_Slot]:
        size = self.rc.items_per_task or math.ceil(len(slots) / self.rc.rollout_workers)
        # Unit 0 continues the driver engine's RNG stream, as the local runtime's single generate call does.
        jobs = [
            self._submit(slots[lo : lo + size], self.engine.get_rng_state() if lo == 0 else None, None)
            for lo in range(0, len(slots), size)
        ]
        self._wait(lambda: all(slot.done for slot in slots), f"{len(slots)} groups")
        self.engine.set_rng_state(self._rng_after[jobs[0]])
        for job in jobs:
            del self._jobs[job], self._rng_after[job]
        return slots

    def _take_async(self, slots: list[_Slot], params: SamplingParams) -> list[_Slot]:
        self.timings["async/stale_requeued"] = 0.0
        if not self._lead_drawn and self.supply is not None:
            lead = self.supply(self.rc.max_staleness * len(slots))
            items, prompts = [it for it, _ in lead], [ids for _, ids in lead]
            self._submit_each([_Slot(task) for task in plan_tasks(self.workflow, items, prompts, params)])
        self._lead_drawn = True
        self._submit_each(slots)
        taken: list[_Slot] = []
        self._wait(lambda: self._admit(taken, len(slots), params.n), f"{len(slots)} admissible groups")
        staleness = [self.engine.version - _oldest(slot) for slot in taken]
        self.timings["async/staleness_max"] = float(max(staleness))
        self.timings["async/groups_outstanding"] = float(self.outstanding())
        return taken

    def _submit_each(self, slots: list[_Slot]) -> None:
        size = self.rc.items_per_task or 1
        for lo in range(0, len(slots), size):
            self._submit(slots[lo : lo + size], None, self.rc.segment_tokens)

    def _admit(self, taken: list[_Slot], want: int, n: int) -> bool:
        """Move admissible finished groups of size ``n`` into ``taken``, oldest first; re-queue stale ones."""
        skipped: list[_Slot] = []
        while self._ready and len(taken) < want:
            slot = self._ready.popleft()
            if slot.task.params.n != n:
                skipped.append(slot)
            elif self.engine.version - _oldest(slot) > self.rc.max_staleness:
                self.timings["async/stale_requeued"] = self.timings.get("async/stale_requeued", 0.0) + 1
                self._submit([_Slot(slot.task)], None, self.rc.segment_tokens)
            else:
                taken.append(slot)
        self._ready.extendleft(reversed(skipped))
        return len(taken) >= want

    def _submit(self, slots: list[_Slot], rng: torch.Tensor | None, segment: int | None) -> int:
        job = self._next_job
        self._next_job += 1
        if rng is None:
            rng = torch.Generator().manual_seed((self.seed * 1_000_003 + job) % 2**63).get_state()
        self._jobs[job] = slots
        self.rollout_workers.submit(Job(job, "generate", (RolloutUnit([s.task for s in slots], rng, segment),)))
        return job

    def outstanding(self) -> int:
        """Groups queued, generating, scoring or finished but not yet trained on."""
        return len(self._ready) + sum(len(slots) for slots in self._jobs.values() if not slots[0].done)

    # -- the pump: moves finished generations to scoring and scored groups to the buffer ------------------------

    def _pump_loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                try:
                    self._pump_once()
                except BaseException as err:  # handed to the driver thread at its next wait
                    self._error = err
                    self._cond.notify_all()
                    return
                self._cond.notify_all()
            time.sleep(0.005)

    def _pump_once(self) -> None:
        for job, (groups, rng) in self.rollout_workers.poll(0):
            self._rng_after[job.id] = rng
            for slot, group in zip(self._jobs[job.id], groups, strict=True):
                slot.group = group
            unscored = [r for g in groups if not g.scored for r in g.rollouts]
            if unscored:
                self.reward_workers.submit(Job(job.id, "score", (unscored,)))
            else:
                self._finished(job.id)
        for job, (scored, stats) in self.reward_workers.poll(0):
            self.executor.add(stats)
            it = iter(scored)
            for slot in self._jobs[job.id]:
                if slot.group is not None and not slot.group.scored:
                    slot.group.rollouts = [next(it) for _ in slot.group.rollouts]
                    slot.group.scored = True
            self._finished(job.id)

    def _finished(self, job: int) -> None:
        if self.rc.mode == "async":
            self._ready.extend(self._jobs.pop(job))
            self._rng_after.pop(job, None)

    def _wait(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.rc.task_timeout_s
        while not done():
            self._raise_pump_error()
            left = deadline - time.monotonic()
            if left <= 0:
                raise RemoteTimeout(
                    f"waited {self.rc.task_timeout_s:g}s (runtime.ray.task_timeout_s) for {what}; "
                    f"{len(self.rollout_workers.running)} generations and {len(self.reward_workers.running)} "
                    "scorings still running"
                )
            self._cond.wait(min(left, 0.1))

    def _raise_pump_error(self) -> None:
        if self._error is not None:
            raise self._error

    def restarts(self) -> list[WorkerRestart]:
        with self._cond:
            out = self.rollout_workers.replaced + self.reward_workers.replaced
            self.rollout_workers.replaced, self.reward_workers.replaced = [], []
        return out

    # -- checkpoints and shutdown ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Items drawn but not yet trained on (async), so a resumed run neither loses nor repeats them."""
        with self._cond:
            slots = [s for job in sorted(self._jobs) for s in self._jobs[job]] + list(self._ready)
            return {
                "queued": [slot.task for slot in slots],
                "lead_drawn": self._lead_drawn,
                "next_job": self._next_job,
            }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with self._cond:
            self._next_job = state["next_job"]
            self._lead_drawn = state["lead_drawn"]
            self._submit_each([_Slot(task) for task in state["queued"]])

    def close(self) -> None:
        """Stop the pump, kill the actors and, when this runtime started Ray, shut the local cluster down."""
        self._stop.set()
        if self._pump.is_alive():
            self._pump.join(timeout=5)
        self.rollout_workers.close()
        self.reward_workers.close()
        self.executor.close()
        if self._started_ray and ray.is_initialized():
            ray.shutdown()


def _oldest(slot: _Slot) -> int:
    return min(r.completion.version for r in slot.group.rollouts) if slot.group is not None else 0
