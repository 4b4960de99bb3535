"""The Ray runtime on a small local cluster (one per module): sync mode reproduces the local runtime exactly,
async mode trains within its staleness bound, a killed rollout worker loses and repeats nothing, and a weight
sync that cannot finish raises the named error."""

from __future__ import annotations

import copy
import time
from collections import Counter
from typing import Any

import pytest
import torch

ray = pytest.importorskip("ray")

from ray_cluster import ASYNC, RAY, cluster, ray_parts  # noqa: E402, F401
from ray_faults import kill_when_busy  # noqa: E402

from verity.build import build_parts  # noqa: E402
from verity.loop import rl_step  # noqa: E402
from verity.rollout.engine import EngineSpec  # noqa: E402
from verity.runtime.base import RuntimeSpec  # noqa: E402
from verity.runtime.ray.config import RayConfig  # noqa: E402
from verity.runtime.ray.pool import WeightSyncTimeout  # noqa: E402
from verity.runtime.ray.runtime import build_ray_runtime  # noqa: E402
from verity.runtime.ray.setup import check_resources  # noqa: E402
from verity.runtime.ray.workers import RolloutWorker  # noqa: E402
from verity.schema import ConfigError  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("one_thread", "cluster")]


def test_sync_mode_reproduces_the_local_runtime_and_resumes(make_config) -> None:
    """Same seed, one rollout actor: the same tokens, behaviour log-probs, rewards and, after two updates, the
    same parameters bit for bit (unit 0 continues the driver's RNG; the actor loads the learner's weights).
    Restoring the state saved after step 1 (as --resume does) replays step 2 exactly."""
    local = build_parts(make_config(), lambda message: None)
    parts, runtime = ray_parts(make_config(*RAY))
    try:
        for step in range(2):
            if step == 1:
                saved = copy.deepcopy(parts.state_dict())
            _, want = rl_step(local)
            _, got = rl_step(parts)
            assert [r.completion.token_ids for r in got] == [r.completion.token_ids for r in want]
            assert [r.completion.logprobs for r in got] == [r.completion.logprobs for r in want]
            assert [(r.item.id, r.group, r.reward) for r in got] == [(r.item.id, r.group, r.reward) for r in want]
        assert {r.completion.version for r in got} == {1}
        assert_same_parameters(local.learner.model, parts.learner.model)
        parts.load_state_dict(saved)
        _, again = rl_step(parts)
        assert [r.completion.token_ids for r in again] == [r.completion.token_ids for r in got]
        assert_same_parameters(local.learner.model, parts.learner.model)
    finally:
        runtime.close()
        local.runtime.close()


def assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> None:
    theirs = b.state_dict()
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, theirs[name]), name


def test_async_mode_trains_within_the_staleness_bound(make_config) -> None:
    """Two actors generate while the learner trains; every trained sample's oldest token is at most one version
    behind the learner, some are exactly one behind (the pipeline overlaps), and the reward rises."""
    cfg = make_config(*ASYNC, "runtime.ray.rollout_workers=2", "train.lr=1e-2", "rollout.prompts_per_step=8")
    parts, runtime = ray_parts(cfg)
    rewards, lags, seen = [], [], Counter()
    try:
        for _ in range(20):  # at 14 steps the last rewards sat at the margin (0.207 against 0.212 in one run)
            version = parts.learner.version
            metrics, rollouts = rl_step(parts)
            rewards.append(metrics["reward/mean"])
            for r in rollouts:
                assert len(r.completion.token_versions) == len(r.completion.token_ids)
                assert min(r.completion.token_versions) == r.completion.version
                lags.append(version - r.completion.version)
            seen.update({r.item.id for r in rollouts})
            assert runtime.outstanding() <= 2 * 8  # (1 + max_staleness) batches
    finally:
        runtime.close()
    assert max(lags) <= 1 and min(lags) >= 0
    assert 1 in lags
    assert max(seen.values()) == 1, "an item was trained on twice"
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.2, rewards


def test_killed_workers_lose_and_repeat_nothing(make_config) -> None:
    """Kill a rollout actor while it holds work, then the reward actor: each is replaced, their jobs re-queued,
    and every item drawn is trained on once or is still queued (in the checkpoint state) — none lost or twice."""
    cfg = make_config(*ASYNC, "runtime.ray.rollout_workers=2", "runtime.ray.max_staleness=2")
    parts, runtime = ray_parts(cfg)
    drawn: list[str] = []
    sample = parts.sampler.sample

    def recording_sample(count: int) -> Any:
        draws = sample(count)
        drawn.extend(d.item.id for d in draws)
        return draws

    parts.sampler.sample = recording_sample  # type: ignore[method-assign]
    trained: list[str] = []
    try:
        for step in range(4):
            if step == 1:
                kill_when_busy(runtime.rollout_workers)
            if step == 2:
                kill_when_busy(runtime.reward_workers)
            _, rollouts = rl_step(parts)
            trained.extend({r.item.id for r in rollouts})
        queued = [task.item.id for task in runtime.state_dict()["queued"]]
        assert runtime.rollout_workers.restarts == [1, 0]
        assert runtime.reward_workers.restarts == [1]
    finally:
        runtime.close()
    assert len(trained) == len(set(trained)) == 4 * 4
    assert sorted(trained + queued) == sorted(drawn)


class StuckWorker(RolloutWorker):
    """Takes the first weights, then never finishes taking another version."""

    @ray.method(concurrency_group="weights")
    def load_weights(self, weights: Any, version: int, check: Any = None) -> int:
        if version > 0:
            time.sleep(30)
        return super().load_weights(weights, version, check)


def test_a_stuck_weight_sync_raises_the_named_error(make_config) -> None:
    """The limit is lowered after start-up, whose first weight transfer may take longer on busy cores."""
    parts = build_parts(make_config(*RAY[1:]), lambda message: None)
    executor = parts.runtime.executor
    engine_spec = EngineSpec(parts.model_path, parts.tokenizer, settings=parts.cfg.rollout)
    spec = RuntimeSpec(parts.cfg, parts.model_path, parts.engine, engine_spec, executor, parts.learner, None, list)
    runtime = build_ray_runtime(spec, StuckWorker)
    runtime.rc.sync_timeout_s = 1.0
    parts.learner.version = 1
    try:
        start = time.monotonic()
        with pytest.raises(WeightSyncTimeout, match=r"rollout worker 0 did not finish load_weights within 1s"):
            runtime.sync(parts.learner)
        assert time.monotonic() - start < 5
    finally:
        runtime.close()


def test_more_resources_than_the_cluster_has_is_a_config_error() -> None:
    """Two rollout actors of 1 CPU and a reward actor of 1 CPU cannot fit 2 CPUs: said at once, not a hang."""
    with pytest.raises(ConfigError, match=r"request 3 CPUs .* the cluster has 2"):
        check_resources(RayConfig(rollout_workers=2))
    check_resources(RayConfig(rollout_cpus=0.5, reward_cpus=0.5, rollout_workers=3))
