"""The ``runtime.ray`` section: settings of the Ray runtime (docs/distributed.md), apart from the runtime so the
config reads them without importing Ray."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from verity.schema import Section


class RayConfig(Section):
    """The Ray runtime (docs/distributed.md): rollout and reward workers are Ray actors, the learner the driver
    (or, with train.strategy=fsdp2, one actor per learner rank)."""

    address: str | None = Field(
        None, description="Cluster to join ('auto', 'ray://host:10001', host:port); None starts a local one."
    )
    num_cpus: int | None = Field(
        None, gt=0, description="CPUs of a local cluster started by Verity (default all)."
    )
    object_store_mb: int | None = Field(None, gt=0, description="Object store size of a local cluster, in MB.")
    mode: Literal["sync", "async"] = Field(
        "sync",
        description="'sync': generate, train, sync in turn; 'async': workers generate while the learner trains.",
    )
    max_staleness: int = Field(
        1,
        ge=0,
        description="async: a sample is trained on only while learner.version - its oldest token's <= this.",
    )
    rollout_workers: int = Field(
        1, gt=0, description="Rollout engine actors, each with its own copy of the policy."
    )
    reward_workers: int = Field(1, gt=0, description="Verifier actors, each running the reward executor.")
    rollout_cpus: float = Field(1.0, ge=0, description="CPUs requested by each rollout actor.")
    rollout_gpus: float = Field(
        0.0, ge=0, description="GPUs requested by each rollout actor (>0: it runs on cuda)."
    )
    reward_cpus: float = Field(1.0, ge=0, description="CPUs requested by each reward actor.")
    learner_cpus: float = Field(
        1.0, ge=0, description="train.strategy=fsdp2: CPUs requested by each learner rank's actor."
    )
    learner_gpus: float = Field(
        0.0, ge=0, description="train.strategy=fsdp2: GPUs requested per learner rank actor (>0: cuda, nccl)."
    )
    items_per_task: int | None = Field(
        None,
        gt=0,
        description="Prompts per work unit sent to a rollout actor (default: sync splits a step evenly, "
        "async sends one prompt's group at a time).",
    )
    segment_tokens: int = Field(
        16, gt=0, description="async: tokens generated between checks for new weights (interruptible generation)."
    )
    threads: int | None = Field(None, gt=0, description="torch threads in each actor (default: its CPU request).")
    sync_timeout_s: float = Field(60.0, gt=0, description="Longest wait for a worker to take new weights.")
    task_timeout_s: float = Field(600.0, gt=0, description="Longest wait for one work unit (generate or score).")
    max_restarts: int = Field(3, ge=0, description="Restarts of each worker after it dies, before the run fails.")
