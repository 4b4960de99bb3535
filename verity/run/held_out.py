"""Keeping a run's held-out questions out of the tiny base's warm-up, whatever the cache holds.

Three disjoint sets per task: the run's held-out items, the warm-up's competence-check items, and the warm-up's
demonstrations. The base's cache key carries a digest of the held-out questions, and the base records (as short
hashes) every question its warm-up trained on, so a run given a base built for other held-out items is refused
with the overlap named instead of being scored on questions the base was taught.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection
from pathlib import Path

from verity.data.images import item_key
from verity.data.sources import TaskSource
from verity.schema import ConfigError
from verity.types import Item

CHECK_START = 1_000_000  # where check items are taken from along each training stream
WARMUP_QUESTIONS = "warmup_questions.txt"  # one hash a line: the questions a built base was trained on
Log = Callable[[str], None]


def question_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def held_out_digest(held_out: Collection[str]) -> str:
    """One hash of every held-out question: part of the base's cache key (any change in data.eval_items,
    eval.items, a task's eval_path or rows gives another base)."""
    return hashlib.sha256("\n".join(sorted(question_hash(k) for k in held_out)).encode()).hexdigest()[:16]


def check_items(sources: list[TaskSource], held_out: set[str], wanted: int, log: Log) -> list[Item]:
    """``wanted`` competence-check items spread over the tasks, each a distinct training question that is not held
    out. A task with fewer than three times its share of such questions gets a third of them (so the warm-up keeps
    the rest to train on), said in the log; one with fewer than three is an error."""
    share = max(wanted // len(sources), 1)
    chosen: list[Item] = []
    for source in sources:
        candidates = distinct_training_items(source, held_out, limit=3 * share, draws=max(20 * share, 2000))
        take = min(share, len(candidates) // 3)
        if take == 0:
            raise ConfigError(
                f"task {source.name!r}: only {len(candidates)} training question(s) besides its held-out "
                "ones, too few for three disjoint sets (held out, the warm-up's competence check, the warm-up's "
                "training); "
                "give the task more distinct questions or hold out fewer (data.eval_items)"
            )
        if take < share:
            log(
                f"warning: task {source.name!r} has {len(candidates)} training questions besides its held-out "
                f"ones: the warm-up checks competence on {take} of them (not {share}) and trains on the others"
            )
        chosen += candidates[:take]
    return chosen


def distinct_training_items(source: TaskSource, held_out: set[str], limit: int, draws: int) -> list[Item]:
    """Up to ``limit`` training items with distinct questions, none held out, from ``draws`` items far along the
    training stream (a table's rows cycle, so a small table yields each of its rows)."""
    found: dict[str, Item] = {}
    for i in range(draws):
        item = source.train_item(CHECK_START + i)
        key = item_key(item)
        if key not in held_out and key not in found:
            found[key] = item
            if len(found) >= limit:
                break
    return list(found.values())


def write_warmup_questions(directory: Path, keys: Collection[str]) -> None:
    (directory / WARMUP_QUESTIONS).write_text("".join(f"{h}\n" for h in sorted({question_hash(k) for k in keys})))


def check_held_out(model_dir: str | Path, held_out: Collection[str]) -> None:
    """Refuse a Verity-built base whose warm-up trained on any of this run's held-out questions, naming them; a
    model without the record (not built by Verity, or by an older version) passes."""
    record = Path(model_dir) / WARMUP_QUESTIONS
    if not record.is_file():
        return
    trained = set(record.read_text().split())
    overlap = sorted(k for k in held_out if question_hash(k) in trained)
    if overlap:
        examples = ", ".join(repr(k[:60]) for k in overlap[:3])
        raise ConfigError(
            f"model.name: the base at {model_dir} was warmed up on {len(overlap)} of this run's {len(held_out)} "
            f"held-out questions (e.g. {examples}): it was built for other held-out items, so held-out accuracy "
            "would measure memory. Use model.name=tiny (which builds a base for these held-out items) or the "
            "data.eval_items / eval.items it was built with"
        )
