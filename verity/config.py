"""Run configuration: the sections composed into ``Config``, YAML loading with line numbers, dotted command-line
overrides. Each section lives beside the package it configures (``verity/train/config.py``, ...).

Every section is a model with ``extra="forbid"``: a mistyped key is an error that names the file, the line, the
dotted key and the closest valid key. Each field is documented once, in its ``description``.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from verity.algo.config import AlgoConfig
from verity.data.config import DataConfig
from verity.envs.config import EnvConfig
from verity.eval import EvalConfig
from verity.model_config import ModelConfig
from verity.rewards.config import RewardConfig
from verity.rollout.config import RolloutConfig
from verity.rollout.registry import ENGINES
from verity.runtime.config import RuntimeConfig
from verity.schema import ConfigError, Section
from verity.tracking import TrackingConfig
from verity.train.config import TrainConfig

__all__ = ["Config", "ConfigError", "dump_config", "load_config"]


class Config(Section):
    """A whole run."""

    name: str = Field("run", description="Run name; the run directory is output_dir/name.")
    output_dir: str = Field("runs", description="Parent directory of run directories.")
    seed: int = Field(0, description="Seed of every random choice in the run.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Policy model.")
    data: DataConfig = Field(default_factory=DataConfig, description="Tasks.")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="Sampling.")
    reward: RewardConfig = Field(default_factory=RewardConfig, description="Verifiers and their executor.")
    algo: AlgoConfig = Field(default_factory=AlgoConfig, description="Advantage, loss, KL, entropy.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Optimisation.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Held-out evaluation.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Metrics and trackers.")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="Placement.")
    env: EnvConfig | None = Field(None, description="Multi-turn episodes with an environment (None: single-turn).")

    @model_validator(mode="after")
    def _engine_defaults(self) -> Config:
        """An engine whose behaviour log-probs come from other kernels than the learner's declares a default
        truncated importance sampling cap (``default_tis_cap`` on its factory: 2.0 for vLLM); it applies unless the
        config sets ``algo.tis_cap``."""
        cap = getattr(ENGINES.resolve(self.rollout.engine), "default_tis_cap", None)
        if cap is not None and "tis_cap" not in self.algo.model_fields_set:
            self.algo.tis_cap = cap
        return self

    @model_validator(mode="after")
    def _rethink_needs_direct_rollouts(self) -> Config:
        """Re-thinking restates prompts, so it needs rollouts generated from the prompts it gives, in the step that
        asks: not an environment's episodes (their prompt comes from ``reset``; see ``env.guidance``), not tree
        search, and not the asynchronous Ray runtime (whose groups come from earlier draws)."""
        if self.data.rethink.enabled and self.env is not None:
            raise ValueError(
                "data.rethink needs single-turn rollouts; with an env, use env.guidance for re-attempts instead"
            )
        if self.data.rethink.enabled and self.rollout.strategy != "sample":
            raise ValueError("data.rethink needs rollout.strategy: sample (re-thinking restates single prompts)")
        if self.data.rethink.enabled and self.runtime.kind == "ray" and self.runtime.ray.mode == "async":
            raise ValueError("data.rethink needs runtime.ray.mode: sync (async groups come from earlier draws)")
        return self

    @model_validator(mode="after")
    def _pass_k_fits_the_group(self) -> Config:
        if self.algo.advantage == "pass_k" and self.algo.pass_k > self.rollout.group_size:
            raise ValueError(
                f"algo.pass_k={self.algo.pass_k} needs at least that many samples per prompt, but "
                f"rollout.group_size={self.rollout.group_size}: lower algo.pass_k or raise rollout.group_size"
            )
        if self.algo.pass_k_guard is not None and not 1 < self.eval.k <= self.rollout.group_size:
            raise ValueError(
                f"algo.pass_k_guard watches the training groups' pass@k at k = eval.k, which must be above 1 and "
                f"at most rollout.group_size={self.rollout.group_size}; eval.k={self.eval.k}"
            )
        return self

    @model_validator(mode="after")
    def _extrapolation_needs_lora(self) -> Config:
        if self.train.extrapolate.enabled and self.model.lora is None:
            raise ValueError(
                "train.extrapolate.enabled needs model.lora: the trajectory it extrapolates is the adapters' "
                "(set model.lora, e.g. model.lora.r=8, or train.extrapolate.enabled=false)"
            )
        return self

    @model_validator(mode="after")
    def _tree_strategy(self) -> Config:
        """Tree search grows its trees in the driver's engine with the local runtime's verifiers, and is a
        single-turn strategy."""
        if self.rollout.strategy != "tree":
            return self
        if self.env is not None:
            raise ValueError("rollout.strategy=tree is for single-turn tasks; remove env: or use strategy=sample")
        if self.runtime.kind != "local":
            raise ValueError(
                f"rollout.strategy=tree runs in runtime.kind=local only (got runtime.kind={self.runtime.kind}); "
                "set runtime.kind=local or rollout.strategy=sample"
            )
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def load_config(source: str | Path | dict[str, Any] | None = None, overrides: list[str] | None = None) -> Config:
    """Build a Config from a YAML file (or a dict) plus ``a.b.c=value`` overrides, with located errors."""
    lines: dict[tuple[str, ...], int] = {}
    where = "<config>"
    if source is None:
        raw: dict[str, Any] = {}
    elif isinstance(source, dict):
        raw = copy.deepcopy(source)  # overrides must not change the caller's dict
    else:
        where = str(source)
        raw, lines = _read_yaml(Path(source))
        _resolve_data_paths(raw, Path(source).parent)
    for override in overrides or []:
        _apply_override(raw, override)
        key = tuple(override.partition("=")[0].strip().split("."))
        lines[key] = 0  # line 0 marks a value given on the command line
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_explain(err, where, lines)) from None


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: malformed YAML: {getattr(err, 'problem', err)}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    lines: dict[tuple[str, ...], int] = {}
    _index_lines(node, (), lines, path)
    return data, lines


def _index_lines(node: yaml.Node, path: tuple[str, ...], out: dict[tuple[str, ...], int], file: Path) -> None:
    """Record the line of every key; a key given twice in one mapping is an error (YAML keeps the second)."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, str(key.value))
            line = key.start_mark.line + 1
            if sub in out:
                raise ConfigError(
                    f"{file}:{line}: {'.'.join(sub)!r} is given twice (lines {out[sub]} and {line}); the second "
                    "would silently replace the first: merge them into one"
                )
            out[sub] = line
            _index_lines(value, sub, out, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            out[(*path, str(i))] = value.start_mark.line + 1
            _index_lines(value, (*path, str(i)), out, file)


def _resolve_data_paths(raw: dict[str, Any], config_dir: Path) -> None:
    """A task's relative ``path``/``eval_path`` is looked up from the current directory first, then from the
    config file's directory (so a config and its data can live side by side and run from anywhere)."""
    data = raw.get("data")
    tasks = data.get("tasks") if isinstance(data, dict) else None
    for task in tasks if isinstance(tasks, list) else []:
        for key in ("path", "eval_path"):
            value = task.get(key) if isinstance(task, dict) else None
            if isinstance(value, str) and value and not Path(value).is_absolute() and not Path(value).exists():
                beside = config_dir / value
                if beside.exists():
                    task[key] = str(beside)


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, value = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r}: expected dotted.key=value, e.g. train.lr=1e-4")
    parts = key.strip().split(".")
    node: Any = raw
    for part in parts[:-1]:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not inside a mapping")
        node = node.setdefault(part, {})
    if isinstance(node, list) and parts[-1].isdigit() and int(parts[-1]) < len(node):
        node[int(parts[-1])] = yaml.safe_load(value)
    elif isinstance(node, dict):
        node[parts[-1]] = yaml.safe_load(value)
    else:
        raise ConfigError(f"override {override!r}: {parts[-2]!r} is not a mapping")


def _explain(err: ValidationError, where: str, lines: dict[tuple[str, ...], int]) -> str:
    messages = []
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        line = _nearest_line(loc, lines)
        prefix = "command-line override" if line == 0 else f"{where}:{line}" if line else where
        dotted = ".".join(loc) or "<top level>"
        if e["type"] == "extra_forbidden":
            valid = _fields_at(loc[:-1])
            close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
            hint = f"; did you mean {'.'.join((*loc[:-1], close[0]))!r}?" if close else ""
            messages.append(f"{prefix}: unknown key {dotted!r}{hint} (valid here: {', '.join(valid)})")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            messages.append(f"{prefix}: {dotted}: {e['msg']}{shown}")
    return "invalid configuration:\n  " + "\n  ".join(messages)


def _nearest_line(loc: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> int | None:
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _fields_at(loc: tuple[str, ...]) -> list[str]:
    """Field names of the section model at ``loc`` (list indices skipped)."""
    model: type[BaseModel] = Config
    for part in loc:
        if part.isdigit():
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        inner = getattr(annotation, "__args__", (annotation,))
        nested = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return sorted(model.model_fields)


def dump_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML."""
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
