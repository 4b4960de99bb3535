"""Trackers: where a run's metrics go.

Every run writes ``metrics.jsonl`` (one JSON object per logged step, with ``step`` and ``time`` = seconds since the
run started); TensorBoard, Weights & Biases, MLflow and trackio are optional mirrors named in config. Each mirror's
package is imported only when it is named, and each runs in a local or offline mode, so no tracker needs a network:
TensorBoard writes event files under ``run_dir/tensorboard``, W&B runs offline under ``run_dir/wandb`` (sync it
later with ``wandb sync``), MLflow writes a SQLite store ``run_dir/mlflow.db``, and trackio writes its local
database (``TRACKIO_DIR``, by default under the Hugging Face cache, where ``trackio show`` finds it).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, get_args

from verity.tracking.config import TrackerKind


class Tracker(Protocol):
    """Receives a run's metrics, one mapping per logged step."""

    def log(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


def _checked(step: int, metrics: Mapping[str, float]) -> dict[str, float]:
    """Validate one logged row; metric values become plain floats (tensors and numpy scalars included)."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"tracker step must be a non-negative int, got {step!r}")
    row: dict[str, float] = {}
    for key, value in metrics.items():
        if key in ("step", "time"):
            raise ValueError(f"metric name {key!r} is reserved: trackers add 'step' and 'time' themselves")
        try:
            row[key] = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"metric {key!r} must be a number, got {type(value).__name__}: {value!r}") from None
    return row


class JsonlTracker:
    """Appends one JSON object per ``log`` call to ``path`` and flushes it, so a crash loses no logged step.

    ``time`` is seconds since this tracker was created plus ``time_offset`` (a resumed run passes the wall time it
    had already spent). Non-finite values are written as ``null`` so every line stays strict JSON.
    """

    def __init__(self, path: Path, time_offset: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._start = clock() - time_offset
        self._file = self.path.open("a", encoding="utf-8")

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        values = _checked(step, metrics)
        row: dict[str, Any] = {"step": step, "time": round(self._clock() - self._start, 3)}
        row.update({k: v if math.isfinite(v) else None for k, v in values.items()})
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class FanoutTracker:
    """Sends every row to each of several trackers; closes all of them even when one fails to close."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = list(trackers)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for tracker in self.trackers:
            tracker.log(step, metrics)

    def close(self) -> None:
        errors = []
        for tracker in self.trackers:
            try:
                tracker.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def _import_backend(module: str, extra: str) -> Any:
    """Import an optional tracker package, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"tracker {extra!r} needs the {exc.name or module!r} package: pip install 'verity[{extra}]'"
        ) from exc


class TensorBoardTracker:
    """Writes each metric as a scalar (tag = metric name) to event files under ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        _import_backend("tensorboard", "tensorboard")
        writer_module = _import_backend("torch.utils.tensorboard", "tensorboard")
        self._writer = writer_module.SummaryWriter(log_dir=str(log_dir))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for key, value in _checked(step, metrics).items():
            self._writer.add_scalar(key, value, global_step=step)

    def close(self) -> None:
        self._writer.close()


class WandbTracker:
    """Logs to a Weights & Biases run in offline mode under ``run_dir/wandb``."""

    def __init__(self, run_dir: Path, run_name: str, config: dict[str, Any], project: str) -> None:
        wandb = _import_backend("wandb", "wandb")
        self._run = wandb.init(
            project=project, name=run_name, config=config, dir=str(run_dir), mode="offline", reinit="create_new"
        )

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self._run.log(_checked(step, metrics), step=step)

    def close(self) -> None:
        self._run.finish()


_MLFLOW_BAD_CHARS = re.compile(r"[^\w./\- :]")


def mlflow_metric_name(key: str) -> str:
    """MLflow accepts only letters, digits, ``_ - . / :`` and spaces in a metric name: ``eval/pass@4`` is logged as
    ``eval/pass_at_4`` and any other character as ``_``."""
    return _MLFLOW_BAD_CHARS.sub("_", key.replace("@", "_at_"))


class MlflowTracker:
    """Logs to an MLflow run in a local SQLite store ``run_dir/mlflow.db`` (artifacts in ``run_dir/mlartifacts``,
    the config among them); browse it with ``mlflow ui --backend-store-uri sqlite:///RUN_DIR/mlflow.db``.

    It talks to the store through its own client, so it never changes the process's global MLflow tracking URI.
    """

    def __init__(self, run_dir: Path, run_name: str, config: dict[str, Any], experiment: str) -> None:
        mlflow_tracking = _import_backend("mlflow.tracking", "mlflow")
        run_dir = Path(run_dir).resolve()
        self.tracking_uri = f"sqlite:///{run_dir / 'mlflow.db'}"
        self._client = mlflow_tracking.MlflowClient(tracking_uri=self.tracking_uri)
        found = self._client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found
            else self._client.create_experiment(experiment, artifact_location=(run_dir / "mlartifacts").as_uri())
        )
        self.run_id: str = self._client.create_run(experiment_id, run_name=run_name).info.run_id
        self._client.log_dict(self.run_id, config, "config.json")
        self._metric_type = _import_backend("mlflow.entities", "mlflow").Metric

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        now_ms = int(time.time() * 1000)
        batch = [
            self._metric_type(mlflow_metric_name(k), v, now_ms, step) for k, v in _checked(step, metrics).items()
        ]
        self._client.log_batch(self.run_id, metrics=batch)

    def close(self) -> None:
        self._client.set_terminated(self.run_id)


class TrackioTracker:
    """Logs to a local trackio project (stored under ``TRACKIO_DIR``; no Space, no server, no system probes)."""

    def __init__(self, run_name: str, config: dict[str, Any], project: str) -> None:
        trackio = _import_backend("trackio", "trackio")
        self._run = trackio.init(
            project=project, name=run_name, config=config, embed=False, auto_log_gpu=False, auto_log_cpu=False
        )

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self._run.log(_checked(step, metrics), step=step)

    def close(self) -> None:
        self._run.finish()


TRACKER_KINDS: tuple[str, ...] = get_args(TrackerKind)


def build_tracker(
    kinds: Sequence[str],
    run_dir: Path,
    run_name: str,
    config: dict[str, Any],
    project: str = "verity",
    time_offset: float = 0.0,
) -> Tracker:
    """One tracker that writes ``run_dir/metrics.jsonl`` and mirrors every row to each tracker named in ``kinds``.

    ``config`` is the resolved run config, recorded by the trackers that keep one; ``time_offset`` is where the
    time column starts (a resumed run goes on from its last row). Raises ``ValueError`` for an unknown tracker
    name and ``ImportError`` naming the extra to install when a tracker's package is missing.
    """
    unknown = [kind for kind in kinds if kind not in TRACKER_KINDS]
    if unknown:
        raise ValueError(f"unknown tracker(s) {unknown} in tracking.trackers; choose from {list(TRACKER_KINDS)}")
    run_dir = Path(run_dir)
    trackers: list[Tracker] = [JsonlTracker(run_dir / "metrics.jsonl", time_offset)]
    factories: dict[str, Callable[[], Tracker]] = {
        "tensorboard": lambda: TensorBoardTracker(run_dir / "tensorboard"),
        "wandb": lambda: WandbTracker(run_dir, run_name, config, project),
        "mlflow": lambda: MlflowTracker(run_dir, run_name, config, project),
        "trackio": lambda: TrackioTracker(run_name, config, project),
    }
    try:
        for kind in dict.fromkeys(kinds):
            if kind != "jsonl":
                trackers.append(factories[kind]())
    except BaseException:
        FanoutTracker(trackers).close()
        raise
    return FanoutTracker(trackers)
