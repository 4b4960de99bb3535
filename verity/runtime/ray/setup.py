"""Starting or joining a Ray cluster for a run, and checking that the run's actors fit it."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

import ray

from verity.runtime.ray.config import RayConfig
from verity.schema import ConfigError


def check_resources(rc: RayConfig, learners: int = 0) -> None:
    """Fail at once, naming the settings, when the actors (with ``learners`` learner ranks) ask for more than the
    cluster has (Ray would otherwise leave them pending until the start-up limit)."""
    have = ray.cluster_resources()
    for resource, need, keys in (
        (
            "CPU",
            rc.rollout_workers * rc.rollout_cpus + rc.reward_workers * rc.reward_cpus + learners * rc.learner_cpus,
            "rollout_cpus/reward_cpus/learner_cpus",
        ),
        ("GPU", rc.rollout_workers * rc.rollout_gpus + learners * rc.learner_gpus, "rollout_gpus/learner_gpus"),
    ):
        total = have.get(resource, 0.0)
        if need > total + 1e-9:
            raise ConfigError(
                f"runtime.ray: the actors request {need:g} {resource}s ({rc.rollout_workers} rollout, "
                f"{rc.reward_workers} reward, {learners} learner x runtime.ray.{keys}) but the cluster has "
                f"{total:g}; request less per actor, use fewer workers, or add nodes"
            )


def init_ray(rc: RayConfig) -> bool:
    """Join ``rc.address`` or start a local cluster, unless Ray is already up; True when this call started it.
    Actors import verifiers and tasks by path, so they get the driver's working directory on PYTHONPATH."""
    if ray.is_initialized():
        return False
    paths = [os.getcwd(), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    local = rc.address is None
    with _sigint_ignored_by_children():
        ray.init(
            address=rc.address,
            num_cpus=rc.num_cpus if local else None,
            object_store_memory=rc.object_store_mb * 2**20 if local and rc.object_store_mb else None,
            include_dashboard=False,
            runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}},
        )
    return True


@contextlib.contextmanager
def _sigint_ignored_by_children() -> Iterator[None]:
    """Start Ray's services with SIGINT ignored (an ignored signal stays ignored across exec). A local cluster's
    services share the terminal's process group, so Ctrl-C would otherwise kill them under the driver, which
    turns the first Ctrl-C into a clean stop with a checkpoint and then shuts the cluster down itself."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
