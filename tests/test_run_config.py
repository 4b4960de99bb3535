"""Run configuration: YAML errors located by file and line, unknown keys with a suggestion, type errors, dotted
overrides (list indices included), and the resolved config written back as YAML."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from verity.config import Config, dump_config, load_config
from verity.schema import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def error_of(source: Path | dict, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(source, overrides)
    return str(info.value)


def test_defaults_without_a_source() -> None:
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert (cfg.model.name, cfg.data.tasks[0].name, cfg.rollout.group_size) == ("tiny", "chain_sum", 8)
    assert cfg.run_dir == Path("runs") / "run"


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ntrain:\n  steps: 3\n  lr: [1, 2\nrollout:\n  group_size: 4\n")
    message = error_of(path)
    line = int(re.search(rf"{re.escape(str(path))}:(\d+): malformed YAML", message).group(1))
    assert line in (5, 6)  # the parser notices the unclosed list where the next mapping starts


def test_tab_indentation_is_malformed(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n\tsteps: 3\n")
    assert error_of(path).startswith(f"{path}:2: malformed YAML")


def test_unknown_key_names_line_and_suggests_the_closest(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ntrain:\n  lr: 0.1\n  stpes: 5\n")
    message = error_of(path)
    assert f"{path}:4: unknown key 'train.stpes'; did you mean 'train.steps'?" in message
    assert "valid here:" in message and "max_grad_norm" in message


def test_unknown_key_inside_a_list_element(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  tasks:\n    - source: reasoning_gym\n      nmae: chain_sum\n")
    message = error_of(path)
    assert f"{path}:4: unknown key 'data.tasks.0.nmae'; did you mean 'data.tasks.0.name'?" in message


def test_unknown_top_level_section(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "rolout:\n  group_size: 4\n"))
    assert ":1: unknown key 'rolout'; did you mean 'rollout'?" in message


def test_wrong_type_names_key_line_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  steps: many\nrollout:\n  temperature: -1\n")
    message = error_of(path)
    assert f"{path}:2: train.steps:" in message and "'many'" in message
    assert f"{path}:4: rollout.temperature:" in message and "greater than 0" in message


def test_wrong_choice_lists_the_choices() -> None:
    message = error_of({"runtime": {"kind": "cluster"}})
    assert "<config>: runtime.kind:" in message and "Registered: local, ray" in message


def test_source_specific_fields_are_required() -> None:
    assert "a jsonl task needs `path`" in error_of({"data": {"tasks": [{"source": "jsonl", "name": "q"}]}})
    message = error_of({"data": {"tasks": [{"source": "generator", "name": "g"}]}})
    assert "module:function" in message


def test_missing_config_file(tmp_path: Path) -> None:
    assert error_of(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: config file not found"


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "top level must be a mapping" in error_of(write(tmp_path, "- a\n- b\n"))


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing\n")) == Config()


def test_dotted_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "train:\n  lr: 0.1\ndata:\n  tasks:\n    - {source: reasoning_gym, name: chain_sum}\n"
        "    - {source: reasoning_gym, name: basic_arithmetic}\n",
    )
    cfg = load_config(
        path,
        [
            "train.lr=1e-4",
            "rollout.group_size=3",
            "data.tasks.1.weight=2.5",
            "data.tasks.0.kwargs={min_terms: 2}",
            "name=other",
            "train.betas=[0.8, 0.9]",
        ],
    )
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.rollout.group_size == 3
    assert [t.weight for t in cfg.data.tasks] == [1.0, 2.5]
    assert cfg.data.tasks[0].kwargs == {"min_terms": 2}
    assert cfg.name == "other" and cfg.train.betas == (0.8, 0.9)


def test_override_replaces_a_whole_list_element() -> None:
    cfg = load_config({"data": {"tasks": [{"source": "reasoning_gym", "name": "a"}]}}, ["data.tasks.0.name=b"])
    assert cfg.data.tasks[0].name == "b"


def test_bad_overrides() -> None:
    assert "expected dotted.key=value" in error_of({}, ["train.lr"])
    assert "'train.stpes'; did you mean 'train.steps'?" in error_of({}, ["train.stpes=3"])
    assert "train.steps:" in error_of({}, ["train.steps=abc"])
    message = error_of({"data": {"tasks": [{"source": "reasoning_gym", "name": "a"}]}}, ["data.tasks.3.name=b"])
    assert "data.tasks.3.name=b" in message


def test_dump_and_reload_gives_the_same_config(tmp_path: Path) -> None:
    cfg = load_config({"train": {"lr": 0.5}, "data": {"system_prompt": "Think."}}, ["rollout.top_p=0.9"])
    dump_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


def test_quickstart_example_is_valid() -> None:
    cfg = load_config(Path(__file__).parent.parent / "examples" / "quickstart.yaml")
    assert cfg.model.name == "tiny" and cfg.algo.advantage == "pass_k"
    assert cfg.algo.pass_k < cfg.rollout.group_size


def test_a_key_given_twice_names_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  steps: 5\n  lr: 1.0e-3\nrollout:\n  group_size: 4\ntrain:\n  steps: 9\n")
    with pytest.raises(ConfigError, match=r"dup.yaml:6: 'train' is given twice \(lines 1 and 6\); the second"):
        load_config(path)
    path.write_text("train:\n  steps: 5\n  steps: 6\n")
    with pytest.raises(ConfigError, match=r"dup.yaml:3: 'train.steps' is given twice \(lines 2 and 3\)"):
        load_config(path)


def test_pass_k_larger_than_the_group_is_refused() -> None:
    message = error_of({}, ["algo.advantage=pass_k", "algo.pass_k=16", "rollout.group_size=8"])
    assert "algo.pass_k=16" in message and "rollout.group_size=8" in message
    assert load_config({}, ["algo.advantage=pass_k", "algo.pass_k=7", "rollout.group_size=8"]).algo.pass_k == 7


@pytest.mark.parametrize("estimator", ["tree_grpo", "tree_q", "grpo_process"])
@pytest.mark.parametrize(
    ("setting", "key"),
    [
        (["algo.overlong_max_len=100"], "algo.overlong_max_len"),
        (["algo.long2short_coef=0.1"], "algo.long2short_coef"),
        (["algo.repetition_coef=0.1"], "algo.repetition_coef"),
        (["algo.kl_coef=0.1", "algo.kl_in=reward"], "algo.kl_in=reward"),
    ],
)
def test_a_reward_setting_an_estimator_would_ignore_is_refused_naming_both(
    estimator: str, setting: list[str], key: str
) -> None:
    message = error_of({}, [f"algo.advantage={estimator}", *setting])
    assert key in message and f"algo.advantage={estimator}" in message
