"""Every file in examples/ runs: two RL steps on a tiny, quickly warmed-up base, with a small evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO_DIR

from verity.cli.main import main

EXAMPLES = sorted((REPO_DIR / "examples").glob("*.yaml"))
TINY = [
    "train.steps=2",
    "eval.every=0",
    "eval.k=1",
    "data.eval_items=4",
    "rollout.prompts_per_step=2",
    "rollout.group_size=2",
    "model.tiny.hidden_size=32",
    "model.tiny.num_layers=1",
    "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=64",
    "model.warmup.max_steps=2",
    "model.warmup.check_every=1",
    "model.warmup.check_items=4",
    "tracking.quiet=true",
    "runtime.threads=1",
]


@pytest.fixture(scope="module")
def base_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module: examples on the same task share their tiny base."""
    return tmp_path_factory.mktemp("bases")


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_two_steps(example: Path, tmp_path: Path, base_cache: Path) -> None:
    overrides = [*TINY, f"output_dir={tmp_path}", f"model.cache_dir={base_cache}"]
    if "advantage: pass_k" in example.read_text():
        overrides.append("algo.pass_k=1")  # the pass@k estimator needs k below the groups of two
    if "async-ray" in example.stem:
        overrides += ["runtime.ray.num_cpus=2", "runtime.ray.rollout_workers=1"]
    assert main(["train", str(example), *overrides]) == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["steps"]) == ("finished", 2)
    assert summary["eval_after"]["items"] == 4
    assert (run_dir / "final_model" / "config.json").is_file()
