"""Reading rows from local files: jsonl, parquet, csv, and Hugging Face ``datasets`` directories written by
``save_to_disk``. Every row comes with where it was read (file and row/line), so a bad row is a located error.

A ``save_to_disk`` directory is Arrow IPC stream shards listed in ``state.json`` (``_data_files``); a
``DatasetDict`` directory lists its splits in ``dataset_dict.json`` with one such directory per split. They are
read here with pyarrow, so the ``datasets`` package is not needed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from verity.schema import ConfigError

Row = tuple[str, Any]  # (where, row)


def read_rows(path: Path, key: str, split: str = "train") -> list[Row]:
    """All rows of ``path`` (a file by its suffix, or a saved dataset directory); ``key`` names the config key
    in errors. Raises ConfigError for a missing path, an unknown format or an empty source."""
    if not path.exists():
        raise ConfigError(f"{key}: file not found: {path}")
    if path.is_dir():
        rows = list(_saved_dataset_rows(path, split, key))
    elif path.suffix in (".jsonl", ".json"):
        rows = list(_jsonl_rows(path))
    elif path.suffix in (".parquet", ".csv", ".arrow"):
        rows = _table_rows(path, _read_table(path))
    else:
        raise ConfigError(
            f"{key}: {path}: unknown format {path.suffix!r}; use .jsonl, .parquet, .csv, .arrow or a directory "
            "written by datasets' save_to_disk"
        )
    if not rows:
        raise ConfigError(f"{path}: no rows")
    return rows


def _jsonl_rows(path: Path) -> Iterator[Row]:
    with path.open() as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{line_no}", json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}:{line_no}: not valid JSON: {err.msg}") from None


def _read_table(path: Path) -> Any:
    import pyarrow as pa

    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if path.suffix == ".csv":
            import pyarrow.csv as pcsv

            return pcsv.read_csv(path)
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_stream(source).read_all()
    except (pa.ArrowInvalid, OSError) as err:
        raise ConfigError(f"{path}: cannot read as {path.suffix[1:]}: {err}") from None


def _table_rows(path: Path, table: Any) -> list[Row]:
    return [(f"{path} row {i + 1}", row) for i, row in enumerate(table.to_pylist())]


def _saved_dataset_rows(path: Path, split: str, key: str) -> Iterator[Row]:
    splits_file = path / "dataset_dict.json"
    if splits_file.is_file():
        splits = json.loads(splits_file.read_text())["splits"]
        if split not in splits:
            raise ConfigError(f"{key}: {path} has splits {splits}, not {split!r}; set the task's split")
        path = path / split
    state_file = path / "state.json"
    if not state_file.is_file():
        raise ConfigError(
            f"{key}: {path} is not a dataset saved with save_to_disk (no state.json or dataset_dict.json)"
        )
    for shard in json.loads(state_file.read_text())["_data_files"]:
        shard_path = path / shard["filename"]
        if not shard_path.is_file():
            raise ConfigError(f"{state_file}: lists shard {shard['filename']!r}, which is missing")
        yield from _table_rows(shard_path, _read_table(shard_path))
