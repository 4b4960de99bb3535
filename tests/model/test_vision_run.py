"""A vision-language run end to end: the tiny-vl base is built and cached, RL steps with a KL reference run on
image prompts of a two-task mixture with ViSurf references, the final model is saved with its processor, and a
run resumes from its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_vl_model

from verity.config import load_config
from verity.loop import train
from verity.model.loading import load_policy
from verity.model.vision import load_processor
from verity.run.runs import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


def settings(tmp_path: Path) -> dict:
    return {
        "name": "vl",
        "output_dir": str(tmp_path / "runs"),
        "model": tiny_vl_model(tmp_path / "cache"),
        "data": {  # a mixture of two visual tasks, with ViSurf's reference in each group
            "tasks": [
                {
                    "source": "generator",
                    "name": kind,
                    "function": "verity.data.visual:shapes",
                    "kwargs": {"kind": kind},
                }
                for kind in ("shape", "colour")
            ],
            "eval_items": 4,
            "visurf": True,
            "reference_field": "answer",
        },
        "rollout": {"prompts_per_step": 3, "group_size": 3, "max_new_tokens": 4},
        "algo": {"kl_coef": 0.01},
        "train": {"steps": 2, "checkpoint_every": 1, "micro_batch_size": 16},
        "eval": {"every": 0, "k": 1},
        "reward": {"in_process": True},
        "tracking": {"quiet": True},
        "runtime": {"threads": 1},
    }


def test_vision_run_trains_saves_and_resumes(tmp_path: Path) -> None:
    summary = train(load_config(settings(tmp_path)), quiet=True)
    assert (summary["status"], summary["steps"]) == ("finished", 2)
    first = read_metrics(tmp_path / "runs" / "vl")[1]  # step 1 (row 0 is the evaluation before training)
    # Before the first update the learner, the reference and the engine score the image prompts alike.
    assert first["mismatch/logprob_diff_max"] < 1e-4
    assert abs(first["kl"]) < 1e-6
    assert {"task/shape/share", "task/colour/share"} <= set(first)
    final = Path(summary["final_model"])
    load_policy(final)
    assert load_processor(final).image_processor is not None
    assert summary["eval_after"]["samples"][0]["images"][0].startswith("data:image/png;base64,")
    resumed = train(load_config(settings(tmp_path), ["train.steps=3"]), resume=True, quiet=True)
    assert (resumed["status"], resumed["steps"]) == ("finished", 3)
    assert json.loads((final.parent / "summary.json").read_text())["steps"] == 3
