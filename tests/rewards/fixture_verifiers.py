"""Misbehaving verifiers used by the executor tests (importable by worker processes as 'fixture_verifiers:...')."""

import os
import time


def length_reward(completion: str) -> float:
    return float(len(completion))


def echo_setting(completion: str, *, scale: float = 1.0, **fields: object) -> float:
    return scale * float(fields.get("bonus", 0.0))


def hang(completion: str, **fields: object) -> float:
    if completion == "hang":
        time.sleep(60)
    return 1.0


def die(completion: str, **fields: object) -> float:
    if completion == "die":
        os._exit(3)
    return 1.0


def garbage(completion: str, **fields: object) -> object:
    return {"nan": float("nan"), "str": "high", "list": [1.0], "none": None}.get(completion, 0.5)


def boom(completion: str, **fields: object) -> float:
    raise RuntimeError("verifier bug")


def worker_pid(completion: str, **fields: object) -> float:
    return float(os.getpid())


def batch_size_seen(completions: list[str], fields: list[dict], *, offset: float = 0.0) -> list[float]:
    """A batched verifier scoring each completion with the size of the batch it arrived in (plus ``offset``)."""
    return [offset + len(completions)] * len(completions)


batch_size_seen.batched = True  # type: ignore[attr-defined]


def step_scores(completion: str, **fields: object) -> object:
    from verity.types import Score

    return Score(0.5, steps=((1, 1.0), (len(completion), 0.0)))
