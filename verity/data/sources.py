"""Task sources: reasoning-gym families, Python generators and tables of rows (jsonl, parquet, csv, saved
Hugging Face datasets), each with disjoint held-out items."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from verity.data.config import TaskConfig
from verity.data.files import read_rows
from verity.data.images import row_images
from verity.registry import import_object
from verity.schema import ConfigError
from verity.types import Item

# Held-out items of a procedural source use seeds this far from the training seeds, so the two never meet.
EVAL_SEED_OFFSET = 10**8


class TaskSource(Protocol):
    name: str

    def train_item(self, index: int) -> Item: ...

    def eval_items(self, n: int) -> list[Item]: ...


class ReasoningGymSource:
    """A reasoning-gym family as an endless stream: item i is entry i of the dataset seeded with ``seed``."""

    def __init__(self, name: str, kwargs: dict[str, Any], seed: int) -> None:
        import reasoning_gym

        self.name = name
        self._make = lambda s, size: reasoning_gym.create_dataset(name, seed=s, size=size, **kwargs)
        try:
            self._train = self._make(seed, 10**7)
        except Exception as err:  # reasoning-gym raises ValueError/TypeError/KeyError for bad names or settings
            raise ConfigError(f"data.tasks: reasoning-gym family {name!r} with {kwargs}: {err}") from None
        self._eval_seed = seed + EVAL_SEED_OFFSET

    def train_item(self, index: int) -> Item:
        return self._to_item(self._train[index], f"{self.name}/train/{index}")

    def eval_items(self, n: int) -> list[Item]:
        dataset = self._make(self._eval_seed, n)
        return [self._to_item(dataset[i], f"{self.name}/eval/{i}") for i in range(n)]

    def _to_item(self, entry: dict[str, Any], item_id: str) -> Item:
        return Item(
            id=item_id,
            task=self.name,
            prompt=entry["question"],
            answer=str(entry["answer"]),
            meta={"rg_entry": entry},
        )


class TableSource:
    """Rows of a file or saved dataset, each with a prompt and an answer column; other columns reach verifiers as
    keywords.

    Held-out items come from ``eval_path`` / ``eval_split`` or, without them, from the last rows (never trained
    on). Training walks a fresh seeded permutation of the remaining rows each epoch.
    """

    def __init__(self, task: TaskConfig, eval_n: int, seed: int) -> None:
        assert task.path is not None
        self.name = task.name
        key = f"data.tasks[{task.name}]"
        rows = read_items(task, read_rows(Path(task.path), f"{key}.path", task.split), Path(task.path))
        if task.eval_path or task.eval_split:
            eval_path = Path(task.eval_path or task.path)
            eval_rows = read_rows(eval_path, f"{key}.eval_path", task.eval_split or "train")
            self._eval = read_items(task, eval_rows, eval_path)
            self._train = rows
        else:
            if len(rows) <= eval_n:
                raise ConfigError(
                    f"{task.path}: {len(rows)} rows cannot give {eval_n} held-out rows and leave some for "
                    "training; set data.eval_items lower or give the task an eval_path"
                )
            self._train, self._eval = rows[:-eval_n], rows[-eval_n:]
        self._seed = seed

    def train_item(self, index: int) -> Item:
        epoch, pos = divmod(index, len(self._train))
        order = list(range(len(self._train)))
        random.Random(self._seed * 1_000_003 + epoch).shuffle(order)
        return self._train[order[pos]]

    def eval_items(self, n: int) -> list[Item]:
        return self._eval[:n]

    def train_rows(self) -> list[Item]:
        """Every training row, in file order."""
        return self._train


def read_items(task: TaskConfig, rows: list[tuple[str, Any]], path: Path) -> list[Item]:
    """Items of a task's rows read from ``path`` (image paths are relative to its folder); a bad row is an error
    naming its file and row."""
    base = path if path.is_dir() else path.parent
    fields = (task.prompt_field, task.answer_field, task.image_field)
    return [
        _row_to_item(row, task.name, where, f"{task.name}/{i + 1}", *fields, base=base)
        for i, (where, row) in enumerate(rows)
    ]


def _row_to_item(
    row: Any,
    task: str,
    where: str,
    item_id: str,
    prompt_field: str = "prompt",
    answer_field: str = "answer",
    image_field: str = "images",
    base: Path | None = None,
) -> Item:
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
    missing = [k for k in (prompt_field, answer_field) if k not in row]
    if missing:
        raise ConfigError(
            f"{where}: row is missing field(s) {', '.join(missing)}; each row needs {prompt_field!r} and "
            f"{answer_field!r} (set the task's prompt_field/answer_field to use other columns)"
        )
    prompt = row[prompt_field]
    if not isinstance(prompt, str):
        raise ConfigError(f"{where}: {prompt_field!r} must be a string, got {type(prompt).__name__}")
    meta = {k: v for k, v in row.items() if k not in (prompt_field, answer_field, image_field)}
    answer = None if row[answer_field] is None else str(row[answer_field])
    return Item(
        id=str(row.get("id", item_id)),
        task=str(row.get("task", task)),
        prompt=prompt,
        answer=answer,
        meta=meta,
        images=row_images(row.get(image_field), base, where),
    )


class GeneratorSource:
    """A function ``f(seed, index, **kwargs) -> {"prompt": ..., "answer": ..., ...}`` named by import path."""

    def __init__(self, name: str, function: str, kwargs: dict[str, Any], seed: int) -> None:
        self.name = name
        self._fn = resolve_callable(function, f"data.tasks[{name}].function")
        self._kwargs = kwargs
        self._seed = seed

    def train_item(self, index: int) -> Item:
        return self._item(self._seed, index, "train")

    def eval_items(self, n: int) -> list[Item]:
        return [self._item(self._seed + EVAL_SEED_OFFSET, i, "eval") for i in range(n)]

    def _item(self, seed: int, index: int, split: str) -> Item:
        row = self._fn(seed, index, **self._kwargs)
        return _row_to_item(row, self.name, f"generator {self.name} item {index}", f"{self.name}/{split}/{index}")


def resolve_callable(spec: str, key: str) -> Callable[..., Any]:
    """Import ``package.module:function``; a failure is a ``ConfigError`` naming the config key and what went
    wrong."""
    try:
        return import_object(spec, "import path")
    except (ValueError, ImportError, AttributeError, TypeError) as err:
        raise ConfigError(f"{key}: {err}") from None


def build_source(task: TaskConfig, seed: int, eval_n: int) -> TaskSource:
    if task.source == "reasoning_gym":
        return ReasoningGymSource(task.name, task.kwargs, seed)
    if task.source == "generator":
        assert task.function is not None
        return GeneratorSource(task.name, task.function, task.kwargs, seed)
    return TableSource(task, eval_n, seed)
