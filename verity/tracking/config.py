"""The ``tracking:`` section of a run config: where metrics and samples go, and how often."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TrackerKind = Literal["jsonl", "tensorboard", "wandb", "mlflow", "trackio"]


class TrackingConfig(BaseModel):
    """Where metrics and samples go, and how often."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    trackers: list[TrackerKind] = Field(default_factory=list)
    """Mirrors of metrics.jsonl (always written): any of tensorboard, wandb, mlflow, trackio."""
    project: str = "verity"
    """Project (W&B), experiment (MLflow) or project (trackio) name the run is filed under."""
    log_every: int = Field(default=1, ge=1)
    """Log training metrics every this many steps."""
    samples_every: int = Field(default=10, ge=0)
    """Write sample completions to samples.jsonl every this many steps (0: never)."""
    samples_per_step: int = Field(default=4, ge=0)
    """How many completions to write each time samples are written."""
    quiet: bool = False
    """Print one plain line per step (at most every few seconds) instead of a live display."""
    group_by: list[str] = Field(default_factory=list)
    """Item fields (e.g. [kind]) to break training reward and accuracy down by: metrics by/<field>/<value>/reward
    and by/<field>/<value>/accuracy (at most 20 values per field)."""
