"""The fsdp2 learner group with its ranks in Ray actors (runtime.kind=ray, train.strategy=fsdp2): two RL steps end
where the spawned-process group ends, a killed learner actor is a named error within seconds, and learner
actors that do not fit the cluster are a config error."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from ray_cluster import RAY, cluster, ray_parts  # noqa: E402, F401

from verity.algo.config import AlgoConfig  # noqa: E402
from verity.build import build_parts  # noqa: E402
from verity.loop import rl_step  # noqa: E402
from verity.model.loading import load_policy  # noqa: E402
from verity.runtime.ray.config import RayConfig  # noqa: E402
from verity.runtime.ray.learners import RayLearnerGroup  # noqa: E402
from verity.runtime.ray.setup import check_resources  # noqa: E402
from verity.schema import ConfigError  # noqa: E402
from verity.train.batching import Batch  # noqa: E402
from verity.train.config import TrainConfig  # noqa: E402
from verity.train.fsdp.group import LearnerDied, LearnerGroup  # noqa: E402
from verity.train.fsdp.rank import GroupSpec  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("one_thread", "cluster")]

# Two learner ranks of half a CPU beside one rollout and one reward actor: the 2-CPU cluster, exactly.
FSDP2 = ("train.strategy=fsdp2", "train.learners=2", "train.lr=1e-2")
LEARNERS = ("runtime.ray.learner_cpus=0.5",)


@pytest.mark.slow
def test_two_rl_steps_on_learner_actors_equal_the_spawned_group(make_config) -> None:
    """Same seed and settings: the Ray run samples the same tokens and its ranks end with the spawned group's
    parameters (the same sharded computation, so within the fsdp2 tests' 1e-10), after steps that moved them."""
    local = build_parts(make_config(*FSDP2), lambda message: None)
    try:
        assert isinstance(local.learner, LearnerGroup) and not isinstance(local.learner, RayLearnerGroup)
        want_tokens = [[r.completion.token_ids for r in rl_step(local)[1]] for _ in range(2)]
        want = {name: tensor.clone() for name, tensor in local.learner.weights()}
    finally:
        local.close()
    parts, _ = ray_parts(make_config(*FSDP2, *RAY, *LEARNERS))
    try:
        assert isinstance(parts.learner, RayLearnerGroup)
        got_tokens = [[r.completion.token_ids for r in rl_step(parts)[1]] for _ in range(2)]
        got = dict(parts.learner.weights())
        assert parts.learner.version == 2
    finally:
        parts.close()
    assert got_tokens == want_tokens
    initial = load_policy(parts.model_path, "float32", "cpu")[0].state_dict()
    assert set(got) == set(want)
    moved = max((want[name] - initial[name]).abs().max().item() for name in want)
    assert moved > 1e-3  # the two steps changed the policy
    gap = max((got[name] - want[name]).abs().max().item() for name in want)
    assert gap < 1e-10, gap


@pytest.mark.slow
def test_a_killed_learner_actor_is_a_named_error_not_a_hang(tiny_model_dir: Path) -> None:
    train = TrainConfig(lr=1e-2, strategy="fsdp2", learners=2, micro_batch_size=2, fsdp={"timeout_s": 60})
    spec = GroupSpec(str(tiny_model_dir), "float32", "cpu", train, AlgoConfig(), 1.0, 0, 1)
    group = RayLearnerGroup(spec, RayConfig(rollout_cpus=0.5, reward_cpus=0.5, learner_cpus=0.5))
    actors = list(group.transport.actors)
    try:
        ray.kill(actors[1], no_restart=True)
        ids = torch.randint(3, 20, (4, 8))
        mask = torch.ones_like(ids)
        batch = Batch(ids, mask, mask.float(), -torch.ones(4, 8), torch.ones(4, 1))
        start = time.monotonic()
        with pytest.raises(LearnerDied, match=r"learner rank 1 (is gone|died|closed).*actor died"):
            group.step(batch)
        assert time.monotonic() - start < 15
        assert group.transport is None  # the group is stopped: the other rank is not left in a collective
        assert ray.is_initialized()  # the run's cluster stays up for the runtime to close
    finally:
        group.close()
    time.sleep(1.0)
    for actor in actors:  # both actors are gone
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(actor.address.remote(), timeout=30)


def test_learner_actors_that_do_not_fit_are_a_config_error() -> None:
    halves = {"rollout_cpus": 0.5, "reward_cpus": 0.5}
    with pytest.raises(ConfigError, match=r"request 3 CPUs .*2 learner.*learner_cpus.* the cluster has 2"):
        check_resources(RayConfig(**halves, learner_cpus=1.0), learners=2)
    with pytest.raises(ConfigError, match=r"request 2 GPUs .*learner_gpus.* the cluster has 0"):
        check_resources(RayConfig(**halves, learner_cpus=0.5, learner_gpus=1.0), learners=2)
    check_resources(RayConfig(**halves, learner_cpus=0.5), learners=2)
