"""Task sources and sampling: disjoint held-out items, exact sampler resume, and bad data files named by line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verity.build import build_parts, build_tasks
from verity.config import load_config
from verity.data.config import TaskConfig
from verity.data.sources import build_source, resolve_callable
from verity.schema import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

# Three 3-digit terms: about 10^9 distinct questions, so a shared prompt means shared seeds, not chance.
CHAIN_SUM = {
    "source": "reasoning_gym",
    "name": "chain_sum",
    "kwargs": {"min_terms": 3, "max_terms": 3, "min_digits": 3, "max_digits": 3},
}


def test_reasoning_gym_train_and_eval_are_disjoint_and_reproducible() -> None:
    source = build_source(TaskConfig(**CHAIN_SUM), seed=3, eval_n=50)
    held_out = source.eval_items(50)
    train = [source.train_item(i) for i in range(500)]
    assert len({it.prompt for it in held_out}) == 50
    assert not {it.prompt for it in held_out} & {it.prompt for it in train}
    assert not {it.id for it in held_out} & {it.id for it in train}
    again = build_source(TaskConfig(**CHAIN_SUM), seed=3, eval_n=50)
    assert [it.prompt for it in again.eval_items(50)] == [it.prompt for it in held_out]
    assert again.train_item(123) == train[123]
    assert all(it.answer == str(it.meta["rg_entry"]["answer"]) for it in train[:20])


def draws(parts, n: int) -> list[str]:
    return [d.item.prompt for d in parts.sampler.sample(n)]


def test_sampler_state_round_trip_continues_the_same_sequence(make_config) -> None:
    parts = build_parts(make_config(), print)
    draws(parts, 7)
    state = parts.sampler.state_dict()
    expected = draws(parts, 9)
    restored = build_parts(make_config("seed=0"), print)
    restored.sampler.load_state_dict(state)
    assert draws(restored, 9) == expected
    assert draws(build_parts(make_config(), print), 9) != expected  # a fresh sampler starts elsewhere


def test_held_out_prompts_are_never_sampled_for_training(make_config) -> None:
    parts = build_parts(
        make_config("data.tasks.0.function=helpers.loop_tasks:six_questions", "data.eval_items=3"), print
    )
    assert [it.prompt for it in parts.eval_items] == ["q0", "q1", "q2"]
    assert set(draws(parts, 60)) == {"q3", "q4", "q5"}


def write_rows(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def jsonl_config(path: Path, eval_items: int = 2):
    return load_config(
        {"data": {"tasks": [{"source": "jsonl", "name": "qa", "path": str(path)}], "eval_items": eval_items}}
    )


def test_jsonl_rows_become_items_and_the_last_rows_are_held_out(tmp_path: Path) -> None:
    rows = [json.dumps({"prompt": f"q{i}", "answer": i, "level": i % 2}) for i in range(6)]
    sources, held_out = build_tasks(jsonl_config(write_rows(tmp_path / "qa.jsonl", rows)))
    assert [(it.prompt, it.answer, it.meta) for it in held_out] == [
        ("q4", "4", {"level": 0}),
        ("q5", "5", {"level": 1}),
    ]
    train = {sources[0].train_item(i).prompt for i in range(40)}
    assert train == {"q0", "q1", "q2", "q3"}


def test_jsonl_row_missing_a_field_names_file_and_line(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "qa.jsonl", ['{"prompt": "a", "answer": 1}', "", '{"prompt": "b"}'])
    with pytest.raises(ConfigError, match=rf"^{path}:3: row is missing field\(s\) answer"):
        build_tasks(jsonl_config(path, 1))


def test_bad_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "qa.jsonl", ['{"prompt": "a", "answer": 1}', '{"prompt": "b", answer: 2}'])
    with pytest.raises(ConfigError, match=rf"^{path}:2: not valid JSON"):
        build_tasks(jsonl_config(path, 1))


def test_jsonl_with_too_few_rows_for_held_out(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "qa.jsonl", ['{"prompt": "a", "answer": 1}'] * 2)
    with pytest.raises(ConfigError, match="2 rows cannot give 2 held-out rows"):
        build_tasks(jsonl_config(path, 2))


def test_missing_data_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"data.tasks\[qa\].path: file not found: {tmp_path / 'none.jsonl'}"):
        build_tasks(jsonl_config(tmp_path / "none.jsonl"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("helpers.loop_tasks.say_seven", "is not an import path"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("helpers.loop_tasks:missing", "has no callable 'missing'"),
    ],
)
def test_bad_import_paths(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_callable(spec, "data.tasks[g].function")


def test_unknown_reasoning_gym_family() -> None:
    with pytest.raises(ConfigError, match="reasoning-gym family 'no_such_family'"):
        build_source(TaskConfig(source="reasoning_gym", name="no_such_family"), seed=0, eval_n=1)
