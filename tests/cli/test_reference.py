"""docs/config.md is generated from the pydantic models and must match them."""

from __future__ import annotations

from conftest import REPO_DIR

from verity.cli.reference import render_reference, sections, type_name
from verity.config import Config


def test_docs_config_md_matches_the_models() -> None:
    written = (REPO_DIR / "docs" / "config.md").read_text()
    assert written == render_reference(), "docs/config.md is stale: run `verity config-reference` and commit it"


def test_every_key_of_every_nested_section_is_listed() -> None:
    page = render_reference()
    paths = dict(sections(Config))
    assert {"model.lora", "data.tasks[]", "data.tasks[].few_shot[]", "data.stages[].hard_focus"} <= set(paths)
    for path, model in paths.items():
        for name in model.model_fields:
            assert f"| `{f'{path}.{name}' if path else name}` |" in page
    assert "| `train.lr` | `float` | `0.0001` | Peak AdamW learning rate. |" in page
    assert "| `data.tasks[].source` | `'reasoning_gym' \\| 'jsonl'" in page
    assert "| `data.tasks[].name` | `str` | `required` |" in page


def test_type_names_read_like_python() -> None:
    assert type_name(int | None) == "int | null"
    assert type_name(list[str] | str) == "list[str] | str"
