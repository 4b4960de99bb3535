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

from verity.algo.config import AlgoConfig, estimator_setting_keys, estimator_setting_owners, shaping_keys
from verity.algo.registry import resolve_estimator
from verity.data.config import DataConfig
from verity.envs.config import EnvConfig
from verity.eval import EvalConfig
from verity.model.config import ModelConfig
from verity.rewards.config import RewardConfig
from verity.rollout.config import RolloutConfig
from verity.rollout.registry import ENGINES
from verity.rollout.workflows.registry import resolve_workflow
from verity.runtime.config import RuntimeConfig
from verity.runtime.registry import runtime_kind
from verity.schema import ConfigError, Section
from verity.tracking.config import TrackingConfig
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
    def _workflow_fits_the_run(self) -> Config:
        """The workflow (by default episodes with an environment, else single-turn sampling) and its own checks;
        re-thinking restates prompts, so it needs a workflow that samples from the prompts it is given, in the
        step that asks (not a runtime whose groups may come from earlier draws)."""
        if self.rollout.workflow is None:
            self.rollout.workflow = "episode" if self.env is not None else "single"
        workflow = resolve_workflow(self.rollout.workflow)
        errors = workflow.check(self)
        if self.data.rethink.enabled and not workflow.restates:
            hint = "; with an env, use env.guidance for re-attempts instead" if self.env is not None else ""
            errors.append(
                f"data.rethink restates prompts, which rollout.workflow={self.rollout.workflow} does not sample "
                f"from{hint}"
            )
        if self.data.rethink.enabled and runtime_kind(self.runtime.kind).generates_ahead(self):
            errors.append(
                f"data.rethink needs rollouts of the prompts it restates in the same step; runtime.kind="
                f"{self.runtime.kind} here generates ahead (set runtime.ray.mode: sync)"
            )
        if errors:
            raise ValueError("; ".join(errors))
        return self

    @model_validator(mode="after")
    def _estimator_fits_the_run(self) -> Config:
        """The configured estimator's own checks against the rest of the run, and reward shaping or a KL in the
        reward only beside an estimator that reads the rewards."""
        estimator = resolve_estimator(self.algo.advantage)
        errors = estimator.check(self.algo.estimator_settings, self) if estimator.check is not None else []
        if not estimator.shaped:
            errors += [
                f"{key} shapes the rewards, but algo.advantage={self.algo.advantage} reads only step values and "
                f"would ignore it: remove {key} or choose an estimator of the shaped rewards"
                for key in shaping_keys(self.algo)
            ]
            if self.algo.kl_in == "reward" and (self.algo.kl_coef > 0 or self.algo.kl_target is not None):
                errors.append(
                    f"algo.kl_in=reward subtracts the KL from the rewards, but "
                    f"algo.advantage={self.algo.advantage} reads only step values and would ignore it: set "
                    f"algo.kl_in=loss"
                )
        if errors:
            raise ValueError("; ".join(errors))
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
    def _runtime_places_the_learners(self) -> Config:
        if self.train.strategy == "fsdp2" and runtime_kind(self.runtime.kind).learners is None:
            raise ValueError(
                f"train.strategy=fsdp2 needs a runtime that places the learner ranks; runtime.kind="
                f"{self.runtime.kind} does not (use runtime.kind local or ray, or train.strategy=single)"
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
    for override in overrides or []:
        _apply_override(raw, override)
        key = tuple(override.partition("=")[0].strip().split("."))
        lines[key] = 0  # line 0 marks a value given on the command line
    if isinstance(source, str | Path):  # after the overrides: a path given as one is found beside the config too
        _resolve_data_paths(raw, Path(source).parent)
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
        owners = estimator_setting_owners(loc[-1]) if loc[:-1] == ("algo",) else []
        if e["type"] == "extra_forbidden" and owners:
            names = " or ".join(f"algo.advantage={name}" for name in owners)
            messages.append(
                f"{prefix}: {dotted!r} is a setting of {names} only; the run's estimator does not read it: remove "
                f"it, or use that estimator"
            )
        elif e["type"] == "extra_forbidden":
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
    if model is AlgoConfig:  # and the estimators' own settings
        return sorted({*model.model_fields, *estimator_setting_keys()})
    return sorted(model.model_fields)


def dump_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML."""
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
