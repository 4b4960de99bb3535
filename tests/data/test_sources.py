"""Sources: parquet, csv, saved Hugging Face datasets (single split and DatasetDict), column mapping, held-out
rows, located errors; per-task prompt templates and reference solutions."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from verity.data.config import DataConfig, TaskConfig
from verity.data.prompts import TaskPrompts, reference_solution
from verity.data.sources import build_source
from verity.schema import ConfigError
from verity.types import Item

ROWS = [{"question": f"q{i}", "label": i, "solution": f"s{i}"} for i in range(5)]


def save_to_disk_layout(path: Path, rows: list[dict]) -> None:
    """The layout datasets' save_to_disk writes: Arrow stream shards named in state.json."""
    path.mkdir(parents=True)
    table = pa.Table.from_pylist(rows)
    names = ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]
    for name, part in zip(names, [table.slice(0, 2), table.slice(2)], strict=True):
        with pa.OSFile(str(path / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(part)
    (path / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names]}))


def task(source: str, path: Path, **kw: object) -> TaskConfig:
    return TaskConfig(source=source, name="t", path=str(path), prompt_field="question", answer_field="label", **kw)


def test_parquet_rows_map_columns_and_hold_out_the_last_rows(tmp_path: Path) -> None:
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    source = build_source(task("parquet", tmp_path / "d.parquet"), seed=0, eval_n=2)
    assert [(i.prompt, i.answer, i.meta) for i in source.eval_items(2)] == [
        ("q3", "3", {"solution": "s3"}),
        ("q4", "4", {"solution": "s4"}),
    ]
    assert sorted(source.train_item(i).prompt for i in range(3)) == ["q0", "q1", "q2"]  # one epoch, permuted
    first = source.train_item(0)
    assert first.id == f"t/{int(first.prompt[1:]) + 1}"  # task/row number


def test_csv_is_read_by_suffix(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("question,label\nq0,1\nq1,2\nq2,3\n")
    source = build_source(task("datasets", tmp_path / "d.csv"), seed=0, eval_n=1)
    assert [(i.prompt, i.answer) for i in source.eval_items(1)] == [("q2", "3")]


def test_saved_dataset_directory_reads_all_shards(tmp_path: Path) -> None:
    save_to_disk_layout(tmp_path / "ds", ROWS)
    source = build_source(task("datasets", tmp_path / "ds"), seed=0, eval_n=1)
    assert [i.prompt for i in source.eval_items(1)] == ["q4"]
    assert sorted(source.train_item(i).prompt for i in range(4)) == ["q0", "q1", "q2", "q3"]


def test_dataset_dict_splits_give_train_and_held_out(tmp_path: Path) -> None:
    save_to_disk_layout(tmp_path / "dd" / "train", ROWS[:3])
    save_to_disk_layout(tmp_path / "dd" / "test", ROWS[3:])
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    source = build_source(task("datasets", tmp_path / "dd", eval_split="test"), seed=0, eval_n=5)
    assert [i.prompt for i in source.eval_items(5)] == ["q3", "q4"]
    with pytest.raises(ConfigError, match=r"has splits \['train', 'test'\], not 'validation'"):
        build_source(task("datasets", tmp_path / "dd", split="validation"), seed=0, eval_n=1)


def test_bad_row_error_names_file_and_row(tmp_path: Path) -> None:
    pq.write_table(
        pa.Table.from_pylist([{"question": "q", "label": 1}, {"question": None, "label": 2}]),
        tmp_path / "b.parquet",
    )
    with pytest.raises(ConfigError, match=r"b\.parquet row 2: 'question' must be a string, got NoneType"):
        build_source(task("parquet", tmp_path / "b.parquet"), seed=0, eval_n=1)


def test_missing_column_and_bad_jsonl_line_are_located(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "answer": 1}\n{"prompt": "b"}\n')
    jsonl = TaskConfig(source="jsonl", name="j", path=str(path))
    with pytest.raises(ConfigError, match=r"d\.jsonl:2: row is missing field\(s\) answer"):
        build_source(jsonl, seed=0, eval_n=1)
    path.write_text('{"prompt": "a", "answer": 1}\n{oops\n')
    with pytest.raises(ConfigError, match=r"d\.jsonl:2: not valid JSON"):
        build_source(jsonl, seed=0, eval_n=1)


def test_missing_path_and_unknown_format_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.tasks\[t\]\.path: file not found"):
        build_source(task("parquet", tmp_path / "nope.parquet"), seed=0, eval_n=1)
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"unknown format '\.txt'"):
        build_source(task("datasets", tmp_path / "d.txt"), seed=0, eval_n=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a dataset saved with save_to_disk"):
        build_source(task("datasets", tmp_path / "empty"), seed=0, eval_n=1)


class Plain:
    """A tokenizer without a chat template."""

    chat_template = None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[str]:
        return [text]


class Chat(Plain):
    chat_template = "yes"

    def apply_chat_template(self, messages, tokenize: bool, add_generation_prompt: bool) -> str:
        return "|".join(f"{m['role']}:{m['content']}" for m in messages) + "|assistant:"


def test_task_prompts_use_task_system_prompt_and_few_shot() -> None:
    data = DataConfig(
        system_prompt="default",
        tasks=[
            TaskConfig(
                source="generator",
                name="a",
                function="m:f",
                system_prompt="sys-a",
                few_shot=[{"prompt": "1+1", "completion": "<answer>2</answer>"}],
            ),
            TaskConfig(source="generator", name="b", function="m:f"),
        ],
    )
    prompts = TaskPrompts(data)
    item_a, item_b = Item("1", "a", "2+2"), Item("2", "b", "3+3")
    assert prompts.encode(Chat(), item_a) == [
        "system:sys-a|user:1+1|assistant:<answer>2</answer>|user:2+2|assistant:"
    ]
    assert prompts.encode(Chat(), item_b) == ["system:default|user:3+3|assistant:"]
    assert prompts.encode(Plain(), item_a) == ["sys-a\n\n1+1\n<answer>2</answer>\n\n2+2"]


def test_reference_solution_from_field_or_answer_tags() -> None:
    item = Item("1", "t", "p", answer="5", meta={"solution": "because 5", "empty": ""})
    assert reference_solution(item, "solution") == "because 5"
    assert reference_solution(item, "answer") == "<answer>5</answer>"
    assert reference_solution(item, "empty") is None
    assert reference_solution(Item("2", "t", "p"), "answer") is None
