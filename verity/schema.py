"""What every config section shares: the ``Section`` base (unknown keys are errors) and ``ConfigError``, the error
that says what was wrong in a configuration, where, and how to fix it. Each section lives beside the package it
configures; ``verity.config`` composes them into a run's ``Config`` and loads it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A configuration problem, with where it is and how to fix it."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
