import os

import pytest

from verity.rewards.config import RewardConfig
from verity.rewards.executor import RewardExecutor
from verity.types import Item

ITEMS = [Item("1", "t", "p", "42"), Item("2", "t", "p", "7")]
TEXTS = ["<answer>42</answer>", "<answer>8</answer>"]


def test_in_process_default_reward() -> None:
    with RewardExecutor(RewardConfig(in_process=True)) as ex:
        scores = ex.score(ITEMS, TEXTS)
        assert [s.value for s in scores] == [1.0, 0.0]
        assert scores[0].components == {"accuracy": 1.0}
        stats = ex.stats()
        assert stats["scored"] == 2.0 and stats["failures"] == 0.0
        assert ex.stats()["scored"] == 0.0  # reset after reading


def test_in_process_garbage_is_counted() -> None:
    cfg = RewardConfig(verifiers=["fixture_verifiers:garbage"], in_process=True)
    with RewardExecutor(cfg) as ex:
        scores = ex.score([ITEMS[0]] * 5, ["nan", "str", "list", "none", "ok"])
        assert [s.value for s in scores] == [0.0, 0.0, 0.0, 0.0, 0.5]
        assert [s.failed for s in scores] == [True, True, True, True, False]
        stats = ex.stats()
        assert (stats["failures"], stats["unscorable"]) == (3.0, 1.0)


def test_mismatched_lengths() -> None:
    with RewardExecutor(RewardConfig(in_process=True)) as ex, pytest.raises(ValueError, match="2 items but 1"):
        ex.score(ITEMS, TEXTS[:1])


def test_pool_matches_in_process() -> None:
    items, texts = ITEMS * 10, TEXTS * 10
    with RewardExecutor(RewardConfig(in_process=True)) as local:
        expected = local.score(items, texts)
    with RewardExecutor(RewardConfig(workers=2)) as pool:
        assert pool.score(items, texts) == expected


def test_pool_survives_hang_crash_and_exceptions() -> None:
    cfg = RewardConfig(
        verifiers=["fixture_verifiers:hang", "fixture_verifiers:die", "fixture_verifiers:boom"],
        workers=2,
        timeout_s=0.5,
    )
    with RewardExecutor(cfg) as ex:
        scores = ex.score([ITEMS[0]] * 3, ["hang", "die", "fine"])
        assert scores[0].reason == "timeout after 0.5s"
        assert scores[1].reason is not None and scores[1].reason.startswith("worker crashed (exit code 3)")
        assert (
            scores[2].value == 2.0
            and scores[2].reason == "fixture_verifiers:boom: raised RuntimeError: verifier bug"
        )
        stats = ex.stats()
        assert (stats["timeouts"], stats["crashes"], stats["failures"], stats["worker_restarts"]) == (1, 1, 1, 2)
        assert [s.value for s in ex.score([ITEMS[0]] * 2, ["ok", "ok"])] == [2.0, 2.0]  # still serving


def test_tasks_queued_behind_a_hang_or_crash_are_scored_by_the_replacement() -> None:
    """One worker gets several tasks per message; a hang or a crash fails only the task being scored, and every
    task queued behind it is scored normally after the restart."""
    cfg = RewardConfig(verifiers=["fixture_verifiers:hang", "fixture_verifiers:die"], workers=1, timeout_s=0.5)
    texts = ["a", "hang", "b", "c", "die", "d", "e"]
    with RewardExecutor(cfg) as ex:
        scores = ex.score([ITEMS[0]] * len(texts), texts)
        assert scores[1].reason == "timeout after 0.5s"
        assert scores[4].reason is not None and scores[4].reason.startswith("worker crashed (exit code 3)")
        assert [s.value for i, s in enumerate(scores) if i not in (1, 4)] == [2.0] * 5
        assert all(s.reason is None for i, s in enumerate(scores) if i not in (1, 4))
        assert ex.stats()["worker_restarts"] == 2


def test_pool_runs_in_other_processes() -> None:
    with RewardExecutor(RewardConfig(verifiers=["fixture_verifiers:worker_pid"], workers=2)) as ex:
        pids = {s.value for s in ex.score(ITEMS * 4, TEXTS * 4)}
        assert os.getpid() not in pids and len(pids) <= 2


def test_closed_executor_refuses_work() -> None:
    ex = RewardExecutor(RewardConfig(workers=1))
    ex.close()
    with pytest.raises(RuntimeError, match="closed"):
        ex.score(ITEMS, TEXTS)
