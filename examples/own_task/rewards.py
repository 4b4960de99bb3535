"""The reward of examples/own-task.yaml: a plain function, named in the config as ``own_task.rewards:vowel_count``
(found because the config file's directory is on the import path)."""

from __future__ import annotations

from typing import Any

from verity.rewards import extract_answer


def vowel_count(completion: str, answer: str, **fields: Any) -> float:
    """1.0 when the answer tag holds the right count, 0.1 for any other whole number (the format is right), else
    0.0. ``fields`` holds the item's other columns (``kind``, ``prompt``...), unused here."""
    got = extract_answer(completion)
    if got is None or not got.isdigit():
        return 0.0
    return 1.0 if int(got) == int(answer) else 0.1
