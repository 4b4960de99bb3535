"""Image prompts on the Ray runtime: rollout actors load the vision-language policy and get the image inputs with
each prompt; in sync mode with one actor a run is exactly the local runtime's, and an async run (segmented
generation, whose continued prompts keep their images) saves its queued image prompts in a checkpoint and
resumes from it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from conftest import tiny_vl_model  # noqa: E402
from ray_cluster import ASYNC, RAY, cluster, ray_parts  # noqa: E402, F401
from test_ray_runtime import assert_same_parameters  # noqa: E402

from verity.build import build_parts  # noqa: E402
from verity.config import load_config  # noqa: E402
from verity.loop import rl_step, train  # noqa: E402
from verity.model.vision import media_of  # noqa: E402
from verity.train.checkpoint import latest_checkpoint, load_checkpoint  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("one_thread", "cluster")]


@pytest.fixture(scope="module")
def vl_settings(tmp_path_factory) -> dict:
    """A tiny-vl run on one visual task; its base is built once for the module (cache_dir)."""
    root = tmp_path_factory.mktemp("rayvl")
    return {
        "name": "vl",
        "output_dir": str(root / "runs"),
        "model": tiny_vl_model(root / "cache"),
        "data": {
            "tasks": [
                {
                    "source": "generator",
                    "name": "colour",
                    "function": "verity.data.visual:shapes",
                    "kwargs": {"kind": "colour"},
                }
            ],
            "eval_items": 4,
            "visurf": True,  # a reference answer in each group, so the updates are not empty
            "reference_field": "answer",
        },
        "rollout": {"prompts_per_step": 3, "group_size": 3, "max_new_tokens": 4},
        "train": {"steps": 2, "checkpoint_every": 1, "micro_batch_size": 16},
        "eval": {"every": 0, "k": 1},
        "reward": {"in_process": True},
        "tracking": {"quiet": True},
        "runtime": {"threads": 1},
    }


def test_sync_mode_reproduces_the_local_runtime_on_image_prompts(vl_settings: dict) -> None:
    """One rollout actor: the same tokens, behaviour log-probs and rewards as the local runtime on image prompts,
    the engine's log-probs equal the learner's before the first update, and the parameters agree after two."""
    local = build_parts(load_config(vl_settings), lambda message: None)
    parts, runtime = ray_parts(load_config(vl_settings, list(RAY)))
    try:
        for step in range(2):
            _, want = rl_step(local)
            metrics, got = rl_step(parts)
            assert all(media_of(r.prompt_ids) for r in got)  # the prompts are image prompts
            assert [r.completion.token_ids for r in got] == [r.completion.token_ids for r in want]
            assert [r.completion.logprobs for r in got] == [r.completion.logprobs for r in want]
            assert [r.reward for r in got] == [r.reward for r in want]
            assert metrics["grad_norm"] > 0  # the step updated the policy
            if step == 0:
                assert metrics["mismatch/logprob_diff_max"] < 1e-4
        assert_same_parameters(local.learner.model, parts.learner.model)
    finally:
        runtime.close()
        local.runtime.close()


def test_episodes_on_image_items_are_the_local_episodes(vl_settings: dict) -> None:
    """Multi-turn episodes over image items: the rollout actor encodes each item's first prompt with the model's
    processor it loads itself, so its episodes (whose later turns keep the images) are the local runtime's."""
    episodes = [
        "env.name=ray_env_fakes:Turns",
        "env.max_turns=3",
        "env.max_tokens=30",
        "env.turn_tokens=2",
        "data.visurf=false",
    ]
    local = build_parts(load_config(vl_settings, episodes), lambda message: None)
    parts, runtime = ray_parts(load_config(vl_settings, [*RAY, *episodes]))
    try:
        _, want = rl_step(local)
        _, got = rl_step(parts)
        assert all(media_of(r.prompt_ids) for r in got)
        assert {len(r.turns) for r in got} == {3}
        assert [(r.completion.token_ids, r.completion.logprobs, r.loss_mask) for r in got] == [
            (r.completion.token_ids, r.completion.logprobs, r.loss_mask) for r in want
        ]
    finally:
        runtime.close()
        local.runtime.close()


def test_async_image_run_checkpoints_its_queue_and_resumes(vl_settings: dict) -> None:
    """Async mode with segmented generation: the run trains, its checkpoint holds queued image prompts (with their
    image inputs), and --resume continues from it to the next step."""
    settings = copy.deepcopy(vl_settings) | {"name": "vl_async"}
    overrides = [*ASYNC, "rollout.max_new_tokens=6"]
    summary = train(load_config(settings, overrides), quiet=True)
    assert (summary["status"], summary["steps"]) == ("finished", 2)
    run_dir = Path(settings["output_dir"]) / "vl_async"
    state = load_checkpoint(latest_checkpoint(run_dir / "checkpoints"))
    queued = [task.prompt_ids for task in state["runtime"]["queued"]]
    assert queued and all(media_of(ids) for ids in queued)
    resumed = train(load_config(settings, [*overrides, "train.steps=3"]), resume=True, quiet=True)
    assert (resumed["status"], resumed["steps"]) == ("finished", 3)
