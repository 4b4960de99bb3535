"""The run directory: resolved config, summary, samples, checkpoints and the final model.

Every file that is rewritten (summary, checkpoint pointer) is written aside and renamed, so a killed process
never leaves a half-written one.
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

from verity.config import Config, dump_config
from verity.schema import ConfigError
from verity.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from verity.types import Rollout


class RunDir:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.path = cfg.run_dir
        self.checkpoints = self.path / "checkpoints"
        self.final_model = self.path / "final_model"

    def prepare(self, resume: bool) -> None:
        """Create the directory; refuse to silently overwrite a run that could be resumed."""
        if not resume and latest_checkpoint(self.checkpoints) is not None:
            raise ConfigError(
                f"{self.path} already holds a run with checkpoints: pass --resume to continue it, or choose "
                "another name (name=... or output_dir=...)"
            )
        if resume and latest_checkpoint(self.checkpoints) is None:
            raise ConfigError(f"--resume: no complete checkpoint under {self.checkpoints}")
        self.path.mkdir(parents=True, exist_ok=True)
        if not resume:
            for stale in ("metrics.jsonl", "samples.jsonl", "summary.json"):
                (self.path / stale).unlink(missing_ok=True)
        dump_config(self.cfg, self.path / "config.yaml")

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
        learner.save_model(staging, tokenizer, lora.save if lora is not None else "merged")
        shutil.rmtree(self.final_model, ignore_errors=True)
        os.replace(staging, self.final_model)
        return self.final_model

    def save(self, step: int, state: dict[str, Any]) -> Path:
        state = {**state, "step": step, "rng": _rng_state()}
        return save_checkpoint(self.checkpoints, step, state, self.cfg.train.keep_checkpoints)

    def load(self) -> dict[str, Any]:
        path = latest_checkpoint(self.checkpoints)
        if path is None:
            raise ConfigError(f"--resume: no complete checkpoint under {self.checkpoints}")
        state = load_checkpoint(path)
        _set_rng_state(state["rng"])
        return state


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
