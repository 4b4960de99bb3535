"""One factory for every runtime (``runtime.kind``). A runtime's module is imported only when a run asks for it:
Ray takes seconds to import and local runs never need it."""

from __future__ import annotations

from verity.registry import import_object
from verity.runtime.base import Runtime, RuntimeSpec

RUNTIMES = {
    "local": "verity.runtime.local:build_local_runtime",
    "ray": "verity.runtime.ray:build_ray_runtime",
}


def build_runtime(kind: str, spec: RuntimeSpec) -> Runtime:
    """The runtime ``kind`` (a name above, or a user's ``package.module:factory``) built from ``spec``."""
    return import_object(RUNTIMES.get(kind, kind), "runtime.kind")(spec)
