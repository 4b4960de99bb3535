"""Rollout engines by name (``rollout.engine``): ``hf`` (transformers, the default) and ``vllm``; a user's own
backend by import path (``my_pkg.engines:build``), a factory ``(EngineSpec) -> Engine``."""

from __future__ import annotations

from collections.abc import Callable

from verity.registry import Registry
from verity.rollout.engine import ENGINE, Engine, EngineSpec

EngineFactory = Callable[[EngineSpec], Engine]

ENGINES: Registry[EngineFactory] = Registry(ENGINE, ("verity.rollout.hf", "verity.rollout.vllm"))


def build_engine(name: str, spec: EngineSpec) -> Engine:
    """The engine ``name`` (registered, or ``package.module:factory``) built from ``spec``."""
    return ENGINES.resolve(name)(spec)
