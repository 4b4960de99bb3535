"""The ``runtime:`` section: where the stages run (one process, or Ray actors) and on which device."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

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


class RuntimeConfig(Section):
    """Where the stages run."""

    kind: str = Field(
        "local",
        description="'local': one process, no services; 'ray': Ray actors (see runtime.ray); or a user's own "
        "runtime by import path 'package.module:factory' (see verity/runtime/base.py).",
    )
    ray: RayConfig = Field(default_factory=RayConfig, description="Settings of the Ray runtime.")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    threads: int | None = Field(
        None,
        gt=0,
        description="torch intra-op threads (default: 1 for the tiny base on CPU, else torch's choice).",
    )

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        from verity.runtime.factory import (
            RUNTIMES,  # the factory imports the runtimes' contract: keep config light
        )

        if kind not in RUNTIMES and ":" not in kind:
            raise ValueError(
                f"unknown runtime {kind!r}: use {' or '.join(map(repr, RUNTIMES))}, or 'package.module:factory'"
            )
        return kind
