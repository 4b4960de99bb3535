"""Runtimes by name (``runtime.kind``), each with what it can do. A runtime's module is imported only when a run
builds it (Ray takes seconds to import and local runs never need it), so an entry names its factory by import
path and states its capabilities here, where the config and the checks can read them without importing it.

A user's own runtime is named by its import path, ``package.module:factory`` (``(RuntimeSpec) -> Runtime``); it
may state the same capabilities as attributes of its factory (``generates_ahead``, ``learners``), else it is
taken as synchronous and unable to place the ranks of a learner group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from verity.registry import Registry, import_object
from verity.runtime.base import Runtime, RuntimeSpec


def _never(run: Any) -> bool:
    return False


@dataclass(frozen=True)
class RuntimeKind:
    """A runtime: its factory, ``(RuntimeSpec) -> Runtime`` by import path; ``generates_ahead(run)``, whether a
    run's rollouts may come from a policy older than the learner's (the batch is then off-policy); ``learners``,
    the import path of ``(run, model_path, device) -> LearnerGroup`` that places the ranks of a sharded learner
    group (``train.strategy: fsdp2``), or None when the runtime cannot host one."""

    factory: str
    generates_ahead: Callable[[Any], bool] = _never
    learners: str | None = None


RUNTIMES: Registry[RuntimeKind] = Registry("runtime")
RUNTIMES.register("local")(
    RuntimeKind("verity.runtime.local:build_local_runtime", learners="verity.train.fsdp.group:spawn_group")
)
RUNTIMES.register("ray")(
    RuntimeKind(
        "verity.runtime.ray.runtime:build_ray_runtime",
        generates_ahead=lambda run: run.runtime.ray.mode == "async",
        learners="verity.runtime.ray.learners:ray_group",
    )
)


def runtime_kind(spec: str) -> RuntimeKind:
    """The registered runtime ``spec``, or a user's factory by import path with the capabilities it states."""
    if ":" not in spec:
        return RUNTIMES.get(spec)
    factory = import_object(spec, "runtime.kind")
    return RuntimeKind(spec, getattr(factory, "generates_ahead", _never), getattr(factory, "learners", None))


def build_runtime(kind: str, spec: RuntimeSpec) -> Runtime:
    """The runtime ``kind`` built from ``spec``."""
    return import_object(runtime_kind(kind).factory, "runtime.kind")(spec)


def place_learners(kind: str, run: Any, model_path: str, device: str) -> Any:
    """The sharded learner group of ``run`` (``train.strategy: fsdp2``), its ranks placed by the runtime."""
    learners = runtime_kind(kind).learners
    if learners is None:
        raise ValueError(f"runtime.kind={kind} cannot place the ranks of train.strategy=fsdp2")
    return import_object(learners, "runtime.kind")(run, model_path, device)
