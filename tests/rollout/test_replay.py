"""The replay buffer's rules: admission below the threshold, eviction once solved, capacity, checkpoint state."""

from verity.rollout.workflows.replay import CachedSolution, ReplayBuffer

SOLUTION = CachedSolution((1, 2), "12")


def test_a_solved_but_hard_problem_is_cached() -> None:
    buffer = ReplayBuffer(capacity=4, threshold=0.25)
    assert buffer.after_search("a", SOLUTION, correct_share=1 / 8)
    assert buffer.get("a") == SOLUTION
    assert not buffer.after_search("b", SOLUTION, correct_share=0.25)  # not below the threshold: easy enough
    assert not buffer.after_search("c", None, correct_share=0.0)  # nothing found to cache
    assert (len(buffer), buffer.added, buffer.evicted) == (1, 1, 0)


def test_a_cached_problem_leaves_once_direct_samples_reach_the_threshold() -> None:
    buffer = ReplayBuffer(capacity=4, threshold=0.25)
    buffer.after_search("a", SOLUTION, 0.1)
    assert not buffer.after_replay("a", 2 / 15)  # still hard: stays
    assert buffer.get("a") == SOLUTION
    assert buffer.after_replay("a", 4 / 15)
    assert buffer.get("a") is None
    assert not buffer.after_replay("a", 1.0)  # already gone
    assert buffer.evicted == 1


def test_capacity_drops_the_oldest_entry() -> None:
    buffer = ReplayBuffer(capacity=2, threshold=0.5)
    for key in "abc":
        buffer.after_search(key, CachedSolution((ord(key),), key), 0.0)
    assert buffer.get("a") is None
    assert [buffer.get(k).text for k in "bc"] == ["b", "c"]  # type: ignore[union-attr]
    buffer.after_search("b", CachedSolution((7,), "newer"), 0.0)  # re-admitted: now the newest
    buffer.after_search("d", CachedSolution((8,), "d"), 0.0)
    assert buffer.get("c") is None and buffer.get("b").text == "newer"  # type: ignore[union-attr]
    assert (buffer.added, buffer.evicted) == (5, 2)
    buffer.reset_counts()
    assert (buffer.added, buffer.evicted) == (0, 0)


def test_state_dict_round_trip_keeps_entries_and_order() -> None:
    buffer = ReplayBuffer(capacity=2, threshold=0.5)
    buffer.after_search("a", CachedSolution((1,), "1"), 0.0)
    buffer.after_search("b", CachedSolution((2, 3), "23"), 0.0)
    fresh = ReplayBuffer(capacity=2, threshold=0.5)
    fresh.load_state_dict(buffer.state_dict())
    assert fresh.get("b") == CachedSolution((2, 3), "23")
    fresh.after_search("c", CachedSolution((4,), "4"), 0.0)
    assert fresh.get("a") is None  # 'a' was still the oldest
