"""Multi-turn episodes on the Ray runtime: rollout actors play them with the episode workflow, as locally (in
sync mode with one actor, exactly the local episodes), and in async mode an environment that raises, hangs or
kills its actor mid-episode loses no item and trains none twice."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from ray_cluster import ASYNC, RAY, cluster, ray_parts  # noqa: E402, F401

from verity.build import build_parts  # noqa: E402
from verity.loop import rl_step  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("one_thread", "cluster")]

EPISODES = ("env.name=ray_env_fakes:Turns", "env.max_turns=3", "env.max_tokens=30", "env.turn_tokens=2")


def test_sync_mode_plays_the_local_episodes(make_config) -> None:
    """One rollout actor continues the driver's RNG, so its episodes are the local runtime's: same tokens, masks,
    behaviour log-probs, turns and rewards."""
    local = build_parts(make_config(*EPISODES), lambda message: None)
    parts, runtime = ray_parts(make_config(*RAY, *EPISODES))
    try:
        for _ in range(2):
            _, want = rl_step(local)
            _, got = rl_step(parts)
            assert [episode(r) for r in got] == [episode(r) for r in want]
            assert {len(r.turns) for r in got} == {3}  # the environment ends each episode after three steps
            assert {r.reward for r in got} == {0.75}
    finally:
        runtime.close()
        local.runtime.close()


def episode(r: Any) -> tuple[Any, ...]:
    c = r.completion
    return r.item.id, r.group, c.token_ids, c.logprobs, r.loss_mask, r.turns, r.reward


def test_async_episodes_survive_a_raising_a_hanging_and_a_dying_environment(make_config, tmp_path: Path) -> None:
    """Items 1, 5, 9, ... raise on the second step (two turns, reward 0.25), items 2, 6, ... hang on the first
    (ended by env.step_timeout_s: one turn, reward 0) and item 5 kills its actor once (its unit is played again
    on the replacement). Every drawn item is trained on once or is still queued, within the staleness bound."""
    marker = tmp_path / "died"
    cfg = make_config(
        *ASYNC,
        *EPISODES,
        "env.settings.faults=true",
        f"env.settings.exit_marker={marker}",
        "env.step_timeout_s=0.3",
        "runtime.ray.rollout_workers=2",
    )
    parts, runtime = ray_parts(cfg)
    drawn: list[str] = []
    sample = parts.sampler.sample

    def recording_sample(count: int) -> Any:
        draws = sample(count)
        drawn.extend(d.item.id for d in draws)
        return draws

    parts.sampler.sample = recording_sample  # type: ignore[method-assign]
    trained: list[str] = []
    counts: Counter[str] = Counter()
    try:
        for _ in range(3):
            version = parts.learner.version
            start = time.monotonic()
            metrics, rollouts = rl_step(parts)
            assert time.monotonic() - start < 30  # a hung step costs 0.3 s, not the environment's 30
            counts.update({k: metrics[k] for k in ("env/errors", "env/timeouts")})
            assert all(0 <= version - r.completion.version <= 1 for r in rollouts)
            for r in rollouts:
                index = int(r.item.id.rsplit("/", 1)[-1])
                want = {1: (2, 0.25), 2: (1, 0.0)}.get(index % 4, (3, 0.75))
                assert (len(r.turns), r.reward) == want, r.item.id
            trained.extend({r.item.id for r in rollouts})
        queued = [task.item.id for task in runtime.state_dict()["queued"]]
        restarts = runtime.restarts()
    finally:
        runtime.close()
    assert marker.exists() and [(w.kind, w.rank) for w in restarts] in ([("rollout", 0)], [("rollout", 1)])
    assert len(trained) == len(set(trained)) == 3 * 4
    assert sorted(trained + queued) == sorted(drawn)
    assert counts["env/errors"] >= 4 and counts["env/timeouts"] >= 4  # a group of 4 per such item trained
