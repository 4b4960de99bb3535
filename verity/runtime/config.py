"""The ``runtime:`` section: where the stages run (one process, or Ray actors) and on which device."""

from __future__ import annotations

from pydantic import Field, field_validator

from verity.registry import validated
from verity.runtime.ray.config import RayConfig
from verity.runtime.registry import runtime_kind
from verity.schema import Section


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
        return validated(runtime_kind, kind)
