"""Rollout workflows by name (``rollout.workflow``): the built-ins their modules mark with ``register_workflow``,
or a user's ``Workflow`` subclass by import path."""

from __future__ import annotations

from verity.registry import Registry
from verity.rollout.workflows.base import WORKFLOW, Workflow

WORKFLOWS: Registry[type[Workflow]] = Registry(
    WORKFLOW,
    (
        "verity.rollout.workflows.single",
        "verity.rollout.workflows.episode",
        "verity.rollout.workflows.tree_search",
    ),
)


def resolve_workflow(name: str) -> type[Workflow]:
    """The workflow class ``name`` names (registered, or ``package.module:Class``)."""
    cls = WORKFLOWS.resolve(name)
    if not (isinstance(cls, type) and issubclass(cls, Workflow)):
        raise TypeError(
            f"rollout.workflow {name!r} is a {type(cls).__name__}; name a subclass of "
            "verity.rollout.workflows.base.Workflow"
        )
    return cls
