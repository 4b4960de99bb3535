"""The run directory: resolved config, summary, samples, checkpoints and the final model.

Every file that is rewritten (summary, checkpoint pointer) is written aside and renamed, so a killed process
never leaves a half-written one. One process at a time writes a run directory (``verity.run.lock``); a new run
never replaces an earlier one, and a resumed run keeps its settings except those in ``RESUMABLE``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from verity.config import Config, dump_config, load_config
from verity.run.lock import RunLock, RunLocked
from verity.run.runs import read_jsonl, read_summary
from verity.schema import ConfigError
from verity.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from verity.types import Rollout

# Settings a resumed run may change: they do not change what is learned (length, evaluation, logging, threads).
RESUMABLE = (
    "name",
    "output_dir",
    "train.steps",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "eval.",
    "tracking.",
    "runtime.threads",
)
LOGS = ("metrics.jsonl", "samples.jsonl")


class RunDirError(RuntimeError):
    """Writing the run directory failed (e.g. the disk is full); the message says what to do."""


class RunDir:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.path = cfg.run_dir
        self.checkpoints = self.path / "checkpoints"
        self.final_model = self.path / "final_model"
        self.lock = RunLock(self.path)

    def prepare(self, resume: bool) -> None:
        """Create and lock the directory; refuse to replace an earlier run, or to resume with other settings."""
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire()
        except RunLocked as err:
            raise ConfigError(str(err)) from None
        try:
            self._check(resume)
        except BaseException:
            self.lock.release()
            raise
        dump_config(self.cfg, self.path / "config.yaml")

    def _check(self, resume: bool) -> None:
        summary = read_summary(self.path)
        has_checkpoint = latest_checkpoint(self.checkpoints) is not None
        if not resume and not has_checkpoint and summary.get("status") == "stopped":
            self._start_over()  # stopped before its first checkpoint: nothing in it can be resumed
            summary = {}
        if not resume and (has_checkpoint or summary or (self.path / "metrics.jsonl").is_file()):
            status = summary.get("status", "unknown")
            status = "dead" if status == "running" else status  # this process holds the lock: nobody runs it
            how = (
                "pass --resume to continue it, choose another name"
                if has_checkpoint
                else "it has no checkpoint to resume from: choose another name"
            )
            raise ConfigError(
                f"{self.path} already holds a run (status {status}, {summary.get('steps', '?')} steps): {how} "
                "(name=... or output_dir=...) or delete the directory to start over"
            )
        if not resume:
            return
        if not has_checkpoint:
            raise ConfigError(
                f"--resume: no complete checkpoint under {self.checkpoints}; start it without --resume"
            )
        changed = config_changes(self.path / "config.yaml", self.cfg)
        refused = [c for c in changed if not c.startswith(RESUMABLE)]
        if refused:
            raise ConfigError(
                f"--resume: settings differ from {self.path / 'config.yaml'}: {'; '.join(refused)}. A resumed run "
                "keeps its settings except train.steps, eval.* and tracking.*; undo the change, or start a new "
                "run with name=..."
            )
        if summary.get("steps", 0) > self.cfg.train.steps:
            raise ConfigError(
                f"--resume: train.steps={self.cfg.train.steps} is below the {summary['steps']} steps {self.path} "
                "has done; give at least that many"
            )
        if summary.get("status") == "finished" and summary.get("steps") == self.cfg.train.steps:
            raise ConfigError(
                f"--resume: {self.path} finished all {self.cfg.train.steps} steps; to train it further, raise "
                f"train.steps (e.g. train.steps={2 * self.cfg.train.steps})"
            )

    def _start_over(self) -> None:
        for name in (*LOGS, "summary.json"):
            (self.path / name).unlink(missing_ok=True)

    def truncate_logs(self, step: int) -> float:
        """Drop log rows written after checkpoint ``step`` (a killed run logged them, the resumed run logs them
        again); returns the last kept ``time`` of metrics.jsonl, where the resumed run's time column goes on."""
        last_time = 0.0
        for name in LOGS:
            path = self.path / name
            rows = [row for row in read_jsonl(path) if int(row.get("step", 0)) <= step]
            if path.is_file():
                tmp = path.with_name(f".{name}.tmp")
                tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
                os.replace(tmp, path)
            if name == "metrics.jsonl":
                last_time = max((float(row.get("time") or 0.0) for row in rows), default=0.0)
        return last_time

    def write_summary(self, summary: dict[str, Any]) -> None:
        tmp = self.path / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, default=float))
        os.replace(tmp, self.path / "summary.json")

    def append_samples(self, step: int, rollouts: list[Rollout], limit: int) -> None:
        with (self.path / "samples.jsonl").open("a") as f:
            for r in rollouts[:limit]:
                row = {
                    "step": step,
                    "task": r.item.task,
                    "prompt": r.item.prompt,
                    "completion": r.completion.text,
                    "reward": r.score.value,
                    "answer": r.item.answer,
                    "reason": r.score.reason,
                }
                f.write(json.dumps(row) + "\n")

    def save_model(self, learner: Any, tokenizer: Any) -> Path:
        """The learner's final model in Hugging Face format (LoRA merged or as an adapter, per
        ``model.lora.save``), written aside and renamed into place."""
        staging = self.path / ".final_model.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        lora = self.cfg.model.lora
        try:
            learner.save_model(staging, tokenizer, lora.save if lora is not None else "merged")
        except OSError as err:
            shutil.rmtree(staging, ignore_errors=True)
            raise RunDirError(
                f"writing the final model to {staging} failed ({err.strerror or err}); the checkpoint of the last "
                "step is intact: free space and run again with --resume"
            ) from None
        shutil.rmtree(self.final_model, ignore_errors=True)
        os.replace(staging, self.final_model)
        return self.final_model

    def save(self, step: int, state: dict[str, Any]) -> Path:
        state = {**state, "step": step, "rng": _rng_state()}
        try:
            return save_checkpoint(self.checkpoints, step, state, self.cfg.train.keep_checkpoints)
        except OSError as err:
            for staging in self.checkpoints.glob(".staging_*"):  # what the failed write left
                shutil.rmtree(staging, ignore_errors=True)
            raise RunDirError(
                f"writing the checkpoint of step {step} under {self.checkpoints} failed ({err.strerror or err}); "
                f"{self.what_next('free space (or fix the directory)')}"
            ) from None

    def what_next(self, fix: str) -> str:
        """After a failed write: which checkpoint survived, and how to go on once ``fix`` is done."""
        previous = latest_checkpoint(self.checkpoints)
        if previous is None:
            return f"no checkpoint was kept, so there is nothing to resume: {fix} and start the run again"
        return f"the last checkpoint ({previous.name}) is intact; {fix} and continue with --resume"

    def load(self) -> dict[str, Any]:
        path = latest_checkpoint(self.checkpoints)
        if path is None:
            raise ConfigError(f"--resume: no complete checkpoint under {self.checkpoints}")
        state = load_checkpoint(path)
        _set_rng_state(state["rng"])
        return state


def config_changes(path: Path, cfg: Config) -> list[str]:
    """``key (old -> new)`` for every dotted key whose value differs between ``path`` and ``cfg``. The saved config
    is read through the config models, so a key added since it was written counts at its default, not as a
    change."""
    try:
        saved = load_config(path).model_dump(mode="json") if path.is_file() else {}
    except ConfigError:  # a key removed since: compare what was written
        saved = yaml.safe_load(path.read_text())
    old = _flatten(saved)
    new = _flatten(cfg.model_dump(mode="json"))
    keys = sorted(set(old) | set(new), key=list({**old, **new}).index)
    return [f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in keys if old.get(k) != new.get(k)]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
