"""Run configuration: pydantic models, YAML loading with line numbers, dotted command-line overrides.

Every section is a model with ``extra="forbid"``: a mistyped key is an error that names the file, the line, the
dotted key and the closest valid key. Each field is documented once, in its ``description``.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from verity.algo.config import AlgoConfig
from verity.data.config import (
    AdaptiveGroupConfig,
    DifficultyConfig,
    DynamicSamplingConfig,
    FewShotExample,
    ReliftConfig,
    StageConfig,
)
from verity.envs.config import EnvConfig
from verity.rewards.config import RewardConfig
from verity.tracking import TrackingConfig


class ConfigError(ValueError):
    """A configuration problem, with where it is and how to fix it."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TinyModelConfig(Section):
    """Architecture of Verity's offline tiny base model (a Llama-architecture decoder over a small BPE)."""

    vocab_size: int = Field(512, ge=300, description="BPE vocabulary size (256 bytes + merges + special tokens).")
    hidden_size: int = Field(128, gt=0, description="Width of the residual stream.")
    num_layers: int = Field(4, gt=0, description="Number of decoder layers.")
    num_heads: int = Field(4, gt=0, description="Attention heads per layer.")
    intermediate_size: int = Field(384, gt=0, description="Width of the MLP.")
    max_positions: int = Field(512, gt=0, description="Longest prompt + completion, in tokens.")


class WarmupConfig(Section):
    """The SFT warm-up that turns a freshly initialised tiny model into a partly competent base for RL."""

    max_steps: int = Field(600, ge=0, description="Most SFT steps.")
    batch_size: int = Field(64, gt=0, description="Demonstrations per SFT step.")
    lr: float = Field(3e-3, gt=0, description="Peak learning rate (linear warm-up, cosine decay).")
    stop_at_accuracy: float = Field(
        0.3, ge=0, le=1, description="Stop once held-out greedy accuracy reaches this: RL needs room to improve."
    )
    check_every: int = Field(25, gt=0, description="Steps between held-out accuracy checks.")
    check_items: int = Field(100, gt=0, description="Held-out items per accuracy check.")


class LoraConfig(Section):
    """Low-rank adapters (Hu et al. 2021, LoRA) via peft: W x + (alpha / r) B A x, with only A and B trained."""

    r: int = Field(16, gt=0, description="Rank of each adapter.")
    alpha: float = Field(32.0, gt=0, description="Scale numerator: the update is multiplied by alpha / r.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter's input.")
    target_modules: list[str] | str = Field(
        "all-linear",
        description="Module names to adapt (e.g. [q_proj, v_proj]), or 'all-linear' for every linear layer.",
    )
    save: Literal["merged", "adapter"] = Field(
        "merged", description="Final model: adapters merged into a plain model, or the adapter alone."
    )


class ModelConfig(Section):
    """The policy model: Verity's built-in tiny base, a local Hugging Face directory, or a hub id."""

    name: str = Field("tiny", description="'tiny' (built offline and cached), a local directory, or a hub id.")
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig, description="Settings of the built-in base.")
    warmup: WarmupConfig = Field(default_factory=WarmupConfig, description="SFT warm-up of the built-in base.")
    cache_dir: str | None = Field(None, description="Where built bases are cached (default ~/.cache/verity).")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field("auto", description="Weights dtype.")
    lora: LoraConfig | None = Field(None, description="Train LoRA adapters instead of every weight.")


class TaskConfig(Section):
    """One source of items. ``source`` picks the kind; the other fields apply to it."""

    source: Literal["reasoning_gym", "jsonl", "parquet", "datasets", "generator"] = Field(
        description="Kind of source ('datasets': a Hugging Face dataset saved with save_to_disk)."
    )
    name: str = Field(description="Task family: a reasoning-gym dataset name, or a label for the other kinds.")
    path: str | None = Field(None, description="jsonl/parquet: file of rows; datasets: the saved directory.")
    eval_path: str | None = Field(None, description="Held-out file or directory (default: last rows of `path`).")
    split: str = Field("train", description="datasets: split to train on when the directory holds several.")
    eval_split: str | None = Field(None, description="datasets: held-out split (default: last rows of `split`).")
    prompt_field: str = Field("prompt", description="Column holding the prompt.")
    answer_field: str = Field("answer", description="Column holding the reference answer.")
    function: str | None = Field(None, description="generator: 'module:function' taking (seed, index) -> dict.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Settings passed to the family/generator.")
    weight: float = Field(1.0, gt=0, description="Share of this task in the training mixture.")
    system_prompt: str | None = Field(None, description="System message for this task (overrides data's).")
    few_shot: list[FewShotExample] = Field(default_factory=list, description="Worked examples before the prompt.")

    @model_validator(mode="after")
    def _check_source_fields(self) -> TaskConfig:
        if self.source in ("jsonl", "parquet", "datasets") and not self.path:
            raise ValueError(f"a {self.source} task needs `path`")
        if self.source == "generator" and not self.function:
            raise ValueError("a generator task needs `function: module:function`")
        return self


class DataConfig(Section):
    """What the model practises and is evaluated on, and how items are chosen (see docs/data.md)."""

    tasks: list[TaskConfig] = Field(
        default_factory=lambda: [TaskConfig(source="reasoning_gym", name="chain_sum")],
        description="Task sources mixed by weight.",
    )
    system_prompt: str | None = Field(None, description="Optional system message before every prompt.")
    eval_items: int = Field(200, gt=0, description="Held-out items per task (seeds disjoint from training).")
    sampling: Literal["mixture", "balanced"] = Field(
        "mixture", description="'mixture': each prompt's task drawn by weight; 'balanced': equal share per task."
    )
    difficulty: DifficultyConfig = Field(default_factory=DifficultyConfig, description="Online pass rates.")
    dynamic_sampling: DynamicSamplingConfig = Field(
        default_factory=DynamicSamplingConfig, description="Drop zero-variance groups and refill (DAPO)."
    )
    adaptive_group: AdaptiveGroupConfig = Field(
        default_factory=AdaptiveGroupConfig, description="Group size per item from its pass rate."
    )
    stages: list[StageConfig] = Field(default_factory=list, description="Curriculum stages, in order.")
    relift: ReliftConfig = Field(default_factory=ReliftConfig, description="SFT on all-failed items (ReLIFT).")
    visurf: bool = Field(False, description="Put an item's reference solution in its group (ViSurf).")
    reference_field: str = Field(
        "solution",
        description="Item field with a reference solution (ReLIFT, ViSurf); 'answer': <answer>{answer}</answer>.",
    )

    @model_validator(mode="after")
    def _check_stages(self) -> DataConfig:
        names = {t.name for t in self.tasks}
        for i, stage in enumerate(self.stages):
            unknown = sorted(set(stage.tasks or []) - names)
            if unknown:
                raise ValueError(f"stages.{i}.tasks: unknown task(s) {unknown}; tasks are {sorted(names)}")
            if i < len(self.stages) - 1 and stage.steps is None and stage.until is None:
                raise ValueError(f"stages.{i} ({stage.name}): only the last stage may lack `steps` and `until`")
        return self


class RolloutConfig(Section):
    """Sampling settings of the rollout engine."""

    prompts_per_step: int = Field(8, gt=0, description="Distinct prompts per RL step.")
    group_size: int = Field(8, gt=0, description="Completions sampled per prompt (G).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (also applied to training log-probs).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(32, gt=0, description="Longest completion, in tokens.")


class TrainConfig(Section):
    """Optimisation of the policy."""

    steps: int = Field(200, ge=0, description="RL steps (one rollout batch each).")
    lr: float = Field(1e-4, gt=0, description="Peak AdamW learning rate.")
    warmup_steps: int = Field(0, ge=0, description="Linear learning-rate warm-up, in optimizer steps.")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="Learning rate after the warm-up: constant, or decaying to min_lr_ratio x lr."
    )
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Final learning rate of a decay, as a share of lr.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.99), description="AdamW betas.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    epochs: int = Field(1, gt=0, description="Passes over each rollout batch.")
    mini_batches: int = Field(
        1, gt=0, description="Optimizer steps per epoch (the batch is split this many ways)."
    )
    micro_batch_size: int = Field(64, gt=0, description="Sequences per forward/backward (gradient accumulation).")
    micro_batch_tokens: int | None = Field(
        None, gt=0, description="Also cap each micro-batch at this many padded tokens (rows x longest row)."
    )
    share_prompts: bool = Field(
        True, description="Run each group's shared prompt once per training forward (same result, less compute)."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, about a third more compute."
    )
    skip_zero_advantage: bool = Field(
        True,
        description="Leave rows whose advantages are all 0 out of the forward and backward when the loss has no "
        "KL or entropy term (their gradient is exactly 0); loss metrics then cover the trained rows.",
    )
    checkpoint_every: int = Field(50, gt=0, description="Steps between checkpoints.")
    keep_checkpoints: int = Field(2, gt=0, description="How many recent checkpoints to keep.")
    max_bad_steps: int = Field(5, gt=0, description="Stop after this many non-finite losses in a row.")


class EvalConfig(Section):
    """Held-out evaluation: greedy accuracy and pass@k."""

    every: int = Field(50, ge=0, description="Steps between evaluations (0: only before and after).")
    items: int | None = Field(None, gt=0, description="Held-out items per task (default: data.eval_items).")
    k: int = Field(4, ge=1, description="Samples per item for pass@k (1 disables sampling).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for pass@k.")
    batch_size: int = Field(128, gt=0, description="Sequences per generation batch.")
    threshold: float = Field(1.0, description="A completion counts as correct when its reward is at least this.")


class RayConfig(Section):
    """The Ray runtime (docs/distributed.md): rollout and reward workers are Ray actors, the learner the driver."""

    address: str | None = Field(
        None, description="Cluster to join ('auto', 'ray://host:10001', host:port); None starts a local one."
    )
    num_cpus: int | None = Field(
        None, gt=0, description="CPUs of a local cluster started by Verity (default all)."
    )
    object_store_mb: int | None = Field(None, gt=0, description="Object store size of a local cluster, in MB.")
    mode: Literal["sync", "async"] = Field(
        "sync",
        description="'sync': generate, train, sync in turn; 'async': workers generate while the learner trains.",
    )
    max_staleness: int = Field(
        1,
        ge=0,
        description="async: a sample is trained on only while learner.version - its oldest token's <= this.",
    )
    rollout_workers: int = Field(
        1, gt=0, description="Rollout engine actors, each with its own copy of the policy."
    )
    reward_workers: int = Field(1, gt=0, description="Verifier actors, each running the reward executor.")
    rollout_cpus: float = Field(1.0, ge=0, description="CPUs requested by each rollout actor.")
    rollout_gpus: float = Field(
        0.0, ge=0, description="GPUs requested by each rollout actor (>0: it runs on cuda)."
    )
    reward_cpus: float = Field(1.0, ge=0, description="CPUs requested by each reward actor.")
    items_per_task: int | None = Field(
        None,
        gt=0,
        description="Prompts per work unit sent to a rollout actor (default: sync splits a step evenly, "
        "async sends one prompt's group at a time).",
    )
    segment_tokens: int = Field(
        16, gt=0, description="async: tokens generated between checks for new weights (interruptible generation)."
    )
    threads: int | None = Field(None, gt=0, description="torch threads in each actor (default: its CPU request).")
    sync_timeout_s: float = Field(60.0, gt=0, description="Longest wait for a worker to take new weights.")
    task_timeout_s: float = Field(600.0, gt=0, description="Longest wait for one work unit (generate or score).")
    max_restarts: int = Field(3, ge=0, description="Restarts of each worker after it dies, before the run fails.")


class RuntimeConfig(Section):
    """Where the stages run."""

    kind: Literal["local", "ray"] = Field(
        "local", description="'local': one process, no services; 'ray': Ray actors (see runtime.ray)."
    )
    ray: RayConfig = Field(default_factory=RayConfig, description="Settings of the Ray runtime.")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    threads: int | None = Field(None, gt=0, description="torch intra-op threads (default: torch's choice).")


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
