"""Tasks and verifiers that runs in the tests name by import path ('helpers.loop_tasks:...')."""

from __future__ import annotations

from typing import Any


def say_seven(seed: int, index: int) -> dict[str, Any]:
    """A fixed easy task: whatever the prompt, the answer is 7. Seeds keep train and eval prompts apart."""
    return {"prompt": f"7?{seed % 1000}:{index}", "answer": "7"}


def share_of_sevens(completion: str, **fields: Any) -> float:
    """Dense reward for ``say_seven``: the share of the completion's characters that are '7' (0 when empty)."""
    return completion.count("7") / len(completion) if completion else 0.0


def faulty(completion: str, *, id: str, **fields: Any) -> Any:
    """By item index modulo 4: 1 raises, 2 returns a string, 0 and 3 score 0.5."""
    index = int(id.rsplit("/", 1)[-1])
    if index % 4 == 1:
        raise ValueError("verifier bug")
    if index % 4 == 2:
        return "high"
    return 0.5


def six_questions(seed: int, index: int) -> dict[str, Any]:
    """Only six distinct prompts, whatever the seed: held-out items necessarily repeat training ones."""
    return {"prompt": f"q{index % 6}", "answer": str(index % 6)}


def distinct_characters(completion: str, **fields: Any) -> float:
    """Share of distinct characters: differs between almost any two samples, so every group has signal."""
    return len(set(completion)) / max(len(completion), 1)


def always_raises(completion: str, **fields: Any) -> float:
    """A broken verifier: every call raises."""
    raise KeyError("answer_text")


def nan_score(completion: str, **fields: Any) -> float:
    """A broken verifier: every value is NaN."""
    return float("nan")


def hangs_on_odd_items(completion: str, *, id: str, **fields: Any) -> float:
    """Hangs (past any test timeout) on items with an odd index, scores 1 on the others."""
    import time

    if int(id.rsplit("/", 1)[-1]) % 2:
        time.sleep(30)
    return 1.0


def mostly_seven(seed: int, index: int) -> dict[str, Any]:
    """Nine answers in ten are 7: always saying 7 scores 90% without solving anything."""
    return {"prompt": f"q{seed % 1000}:{index}", "answer": "7" if index % 10 else str(index % 7)}


def twenty_questions(seed: int, index: int) -> dict[str, Any]:
    """Twenty prompts whatever the seed: held out with data.eval_items=10, q0..q9 leave q10..q19 to train on.
    ``half`` says which half a question is in (a column verifiers read)."""
    q = index % 20
    return {"prompt": f"q{q}", "answer": str(q % 7), "half": "held" if q < 10 else "train"}


def training_half_right(completion: str, *, half: str, **fields: Any) -> float:
    """Every answer to a training question is right, none to a held-out one: a policy that has memorized its
    training questions and can reach nothing else."""
    return 1.0 if half == "train" else 0.0


def thirty_questions(seed: int, index: int) -> dict[str, Any]:
    """Thirty prompts whatever the seed: a larger held-out set takes questions another one trained on."""
    return {"prompt": f"q{index % 30}", "answer": str(index % 30 % 7)}


def unlearnable(seed: int, index: int) -> dict[str, Any]:
    """An answer no model can infer from its prompt: eight random digits per item."""
    import random

    rng = random.Random(seed * 1_000_003 + index)
    return {"prompt": f"u{index}", "answer": str(rng.randrange(10**7, 10**8))}
