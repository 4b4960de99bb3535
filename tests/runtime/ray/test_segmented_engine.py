"""Interruptible generation without a cluster: a scripted engine whose version moves between segments shows
what the segmented engine hands on — tokens tagged with the version that sampled them, continuations from the
prompt plus the tokens so far, and early stops left alone."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

from helpers.fake_engine import FakeEngine

from verity.runtime.ray.workers import SegmentedEngine, VersionedCompletion
from verity.types import Completion, SamplingParams


class ScriptedEngine(FakeEngine):
    """Each call emits ``max_new_tokens`` copies of the prompt's length, with log-prob -version; a prompt that
    starts with 9 stops after its first token."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[list[list[int]], int, int]] = []

    def decode(self, token_ids: list[int]) -> str:
        return ",".join(map(str, token_ids))

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        self.calls.append((prompts, params.max_new_tokens, params.n))
        out = []
        for p in prompts:
            stop = p[0] == 9
            count = 1 if stop else params.max_new_tokens
            tokens = [len(p)] * count
            finish = "stop" if stop else "length"
            out.append([Completion(tokens, [-float(self.version)] * count, "", finish) for _ in range(params.n)])
        return out


def test_a_generation_spanning_updates_keeps_each_tokens_version() -> None:
    engine = ScriptedEngine()
    segmented = SegmentedEngine(
        engine, segment=2, between_segments=lambda: engine.load_weights({}, engine.version + 1)
    )
    (first, second), (stopped, _) = segmented.generate([[1, 2], [9]], SamplingParams(max_new_tokens=5, n=2))
    assert isinstance(first, VersionedCompletion)
    # Segments of 2, 2 and 1 tokens; each continuation is prefilled from prompt + tokens so far.
    assert first.token_ids == [2, 2, 4, 4, 6]
    assert first.token_versions == [0, 0, 1, 1, 2]
    assert first.logprobs == [0.0, 0.0, -1.0, -1.0, -2.0]
    assert first.version == 0 and first.finish_reason == "length" and first.text == "2,2,4,4,6"
    assert second.token_ids == first.token_ids
    assert stopped.token_ids == [1] and stopped.token_versions == [0] and stopped.finish_reason == "stop"
    assert engine.calls == [
        ([[1, 2], [9]], 2, 2),
        ([[1, 2, 2, 2], [1, 2, 2, 2]], 2, 1),
        ([[1, 2, 2, 2, 4, 4], [1, 2, 2, 2, 4, 4]], 1, 1),
    ]
