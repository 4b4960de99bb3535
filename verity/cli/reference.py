"""The config reference (docs/config.md), generated from the pydantic models: every key of ``Config``, walked
recursively, with its type, default and description. ``verity config-reference`` writes it; a test checks that
the file matches the models."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from verity.algo.registry import ESTIMATORS
from verity.config import Config

DEFAULT_PATH = Path("docs") / "config.md"
HEADER = """# Config reference

Every key of a run config, generated from the pydantic models by `verity config-reference` (do not edit by
hand; a test checks this page matches the code). Keys are dotted paths: in YAML they nest
(`train: {lr: 1e-4}`), on the command line they are overrides (`train.lr=1e-4`); `[]` marks a list of
sections (`data.tasks.0.weight=2`). `verity train CONFIG --dry-run` prints a config with every default filled in.
"""


def render_reference() -> str:
    """The whole reference page as Markdown: every section, then each estimator's own keys of ``algo:``."""
    parts = [HEADER.rstrip()]
    for path, model in sections(Config):
        parts.append(_table(f"`{path or '(top level)'}`", path, model))
    for name in ESTIMATORS.names():
        settings = ESTIMATORS.get(name).settings
        if settings is not None:
            parts.append(_table(f"`algo` with `advantage: {name}`", "algo", settings))
    return "\n\n".join(parts) + "\n"


def _table(title: str, path: str, model: type[BaseModel]) -> str:
    doc = " ".join((model.__doc__ or "").split())
    table = f"## {title}\n\n{doc}\n\n| key | type | default | description |\n|---|---|---|---|"
    for name, field in model.model_fields.items():
        description = " ".join((field.description or "").split()).replace("|", "\\|")
        key = f"{path}.{name}" if path else name
        table += f"\n| `{key}` | {_cell(type_name(field.annotation))} | {_cell(_default(field))} | {description} |"
    return table


def sections(model: type[BaseModel], path: str = "") -> list[tuple[str, type[BaseModel]]]:
    """``(dotted path, model)`` for ``model`` and every section nested in it, depth first, in field order."""
    found = [(path, model)]
    for name, field in model.model_fields.items():
        for nested, suffix in _nested_models(field.annotation):
            found += sections(nested, f"{path}.{name}{suffix}" if path else f"{name}{suffix}")
    return found


def _nested_models(annotation: Any) -> list[tuple[type[BaseModel], str]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, "")]
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list:
        return [(m, f"[]{s}") for m, s in _nested_models(args[0])]
    if origin in (Union, types.UnionType):
        return [found for arg in args for found in _nested_models(arg)]
    return []


def type_name(annotation: Any) -> str:
    """A short readable type: ``int``, ``'a' | 'b'``, ``list[str] | str``, ``float | null``."""
    if annotation is type(None):
        return "null"
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "(section)" if isinstance(value, BaseModel) else _json(value)
    if field.default is PydanticUndefined:
        return "required"
    return _json(field.default)


def _json(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        value = [v.model_dump(mode="json", exclude_defaults=True) for v in value]
    return json.dumps(value, default=str)


def _cell(text: str) -> str:
    return f"`{text}`".replace("|", "\\|")


def write_reference(path: Path = DEFAULT_PATH) -> Path:
    """Write the reference to ``path`` (default docs/config.md, from the current directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_reference())
    return path
