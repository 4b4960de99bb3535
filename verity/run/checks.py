"""Checks of a run. Before it: a device torch can use, the thread count, settings that make learning impossible
or meaningless. During it: verifier failures, stage conditions on metrics never logged, a stretched schedule.

Errors (``ConfigError``) stop the run before anything is built; warnings go to the progress display and to
``summary.warnings``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from pydantic import BaseModel

from verity.algo.registry import ESTIMATORS, resolve_estimator
from verity.config import Config
from verity.data.config import CONDITION
from verity.runtime.registry import runtime_kind
from verity.schema import ConfigError
from verity.train.learner import lr_factor

SMALL_MODEL_PARAMETERS = 20_000_000  # verity eval: below this, one CPU thread is faster than several


def check_device(name: str) -> None:
    """Fail at once for a device this torch cannot use (a typo, or cuda on a CPU-only build)."""
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"runtime.device: {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"runtime.device: {name!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU; use "
            "runtime.device=cpu (or auto), or install a CUDA build of torch"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"runtime.device: {name!r}, but only {torch.cuda.device_count()} GPU(s) are visible")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"runtime.device: {name!r} is not supported; use auto, cpu, cuda or cuda:N")


def apply_default_threads(cfg: Config, small_model: bool) -> int | None:
    """With ``runtime.threads`` unset, a small model (the tiny base) on CPU runs on one torch thread: its matrices
    are too small to split, and on a shared 2-core machine torch's default of two threads was 2 to 15 times
    slower (0.90 vs 0.46 and 3.4 vs 0.23 s per quickstart step). Larger models keep torch's choice. Returns the
    count set, or None."""
    on_cpu = cfg.runtime.device == "cpu" or (cfg.runtime.device == "auto" and not torch.cuda.is_available())
    if cfg.runtime.threads is not None or not small_model or not on_cpu:
        return None
    torch.set_num_threads(1)
    return 1


def resolve_threads(cfg: Config, small_model: bool) -> int:
    """The torch thread count of every command: ``runtime.threads`` when set, else one thread for a small model
    on CPU (``apply_default_threads``), else torch's choice. Returns the count in use."""
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    else:
        apply_default_threads(cfg, small_model)
    return torch.get_num_threads()


def settings_warnings(cfg: Config) -> list[str]:
    """Settings that validate but leave nothing to learn or measure."""
    warnings = []
    sizes = [("rollout.group_size", cfg.rollout.group_size)]
    sizes += [(f"data.stages.{i}.group_size", s.group_size) for i, s in enumerate(cfg.data.stages) if s.group_size]
    estimator = resolve_estimator(cfg.algo.advantage)
    for key, size in sizes:
        if size < estimator.min_group and not cfg.data.adaptive_group.enabled:
            warnings.append(
                f"{key} is {size} with algo.advantage={cfg.algo.advantage}, whose advantages need groups of at "
                f"least {estimator.min_group}: every advantage is 0 and nothing is learned; use group_size >= "
                f"{estimator.min_group}{', or an estimator without groups' if estimator.group_relative else ''}"
            )
    for key in nan_settings(cfg):
        warnings.append(f"{key} is NaN: every comparison with it is false; give a number")
    return warnings


def nan_settings(model: BaseModel, prefix: str = "") -> list[str]:
    """Dotted keys of every NaN number in ``model``, nested sections and lists included."""
    found = []
    for name in type(model).model_fields:
        found += _nan_keys(getattr(model, name), f"{prefix}{name}")
    return found


def _nan_keys(value: Any, key: str) -> list[str]:
    if isinstance(value, BaseModel):
        return nan_settings(value, f"{key}.")
    if isinstance(value, list | tuple):
        return [k for i, v in enumerate(value) for k in _nan_keys(v, f"{key}.{i}")]
    if isinstance(value, dict):
        return [k for sub, v in value.items() for k in _nan_keys(v, f"{key}.{sub}")]
    return [key] if isinstance(value, float) and math.isnan(value) else []


def unlogged_stage_metrics(cfg: Config, logged: Iterable[str]) -> list[str]:
    """A warning for each stage ``until`` condition on a metric the first step did not log: it never ends the
    stage."""
    logged = set(logged)
    warnings = []
    for i, stage in enumerate(cfg.data.stages):
        match = CONDITION.match(stage.until or "")
        if match and match["key"] not in logged:
            close = sorted(k for k in logged if k.split("/")[-1] == match["key"].split("/")[-1])[:3]
            hint = f" (logged metrics like it: {', '.join(close)})" if close else ""
            warnings.append(
                f"data.stages.{i}.until: no step logs metric {match['key']!r}, so stage {stage.name!r} never ends "
                f"by it{hint}"
            )
    return warnings


def schedule_extension(cfg: Config, step: int, planned_steps: int) -> list[str]:
    """A warning when a resumed run changes the length of a decaying learning-rate schedule: the schedule is
    recomputed for the new length, and a run that had decayed trains its added steps at a fraction of train.lr."""
    train = cfg.train
    if train.steps == planned_steps or train.lr_schedule == "constant":
        return []
    per_step = train.epochs * train.mini_batches
    factors = [
        lr_factor(s, train.warmup_steps, train.steps * per_step, train.lr_schedule, train.min_lr_ratio)
        for s in range(step * per_step, train.steps * per_step)
    ]
    if not factors:
        return []
    return [
        f"train.steps changed from {planned_steps} to {train.steps} on resume with a {train.lr_schedule} "
        f"schedule, recomputed for {train.steps} steps: the {train.steps - step} steps from step {step} train at "
        f"{sum(factors) / len(factors):.3f} x train.lr on average ({factors[0]:.3f} down to {factors[-1]:.3f}); "
        "for a fresh schedule, start a new run from the final model (model.name=RUN_DIR/final_model)"
    ]


def first_failure(rollouts: Iterable[Any]) -> str | None:
    """The reason of the first verifier failure among ``rollouts`` ("unscorable" items are not failures)."""
    for r in rollouts:
        reason = r.score.reason
        if reason is not None and not reason.startswith("unscorable"):
            return f"item {r.item.id}: {reason}"
    return None


class RewardWatch:
    """Makes verifier failures visible: the first one, a high failure or timeout rate, and a first step in which
    every score failed (then the run stops: it would train on zeros)."""

    FAILURE_RATE = 0.1

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.counts = {"scored": 0, "failed": 0, "timeouts": 0}
        self.warned: set[str] = set()

    def observe(self, step: int, rollouts: list[Any]) -> list[str]:
        """New warnings after ``step``; raises ``AllScoresFailed`` when every score of the first step failed."""
        failed = [r for r in rollouts if r.score.reason and not r.score.reason.startswith("unscorable")]
        self.counts["scored"] += len(rollouts)
        self.counts["failed"] += len(failed)
        self.counts["timeouts"] += sum(r.score.reason.startswith("timeout") for r in failed)
        if failed and len(failed) == len(rollouts) and self.counts["scored"] == len(rollouts):
            raise AllScoresFailed(
                f"every reward of step {step} failed ({len(failed)} of {len(rollouts)}), e.g. "
                f"{first_failure(failed)}; fix the verifier (try it on one completion in Python) and run again"
            )
        out = []
        unscorable = sum(bool(r.score.reason and r.score.reason.startswith("unscorable")) for r in rollouts)
        if unscorable == len(rollouts) and "unscorable" not in self.warned:
            self.warned.add("unscorable")
            out.append(f"step {step}: no verifier could score any item (each returned None); every reward is 0")
        if failed and "first" not in self.warned:
            self.warned.add("first")
            out.append(f"step {step}: first reward failure, {first_failure(failed)}")
        scored = max(self.counts["scored"], 1)
        if self.counts["timeouts"] / scored > self.FAILURE_RATE and "timeouts" not in self.warned:
            self.warned.add("timeouts")
            out.append(
                f"step {step}: {self.counts['timeouts']} of {self.counts['scored']} rewards timed out "
                f"(reward.timeout_s={self.timeout_s:g}); they score 0: raise the limit or speed up the verifier"
            )
        if self.counts["failed"] / scored > self.FAILURE_RATE and "rate" not in self.warned:
            self.warned.add("rate")
            out.append(
                f"step {step}: {self.counts['failed']} of {self.counts['scored']} rewards failed and scored 0; "
                "reasons are in samples.jsonl"
            )
        return out


class AllScoresFailed(RuntimeError):
    """Every score of the first step was a verifier failure."""


def collapse_remedies(cfg: Config) -> str:
    """What a collapse warning suggests for this run, the measured remedy first (docs/families.md): the configured
    estimator's own remedy where it declares one, else the estimators registered as keeping exploration alive.
    Clip-higher only where the PPO ratio moves: each batch trained on more than once (epochs x mini-batches > 1)
    or by a learner ahead of the sampler (async); with one on-policy update per batch the ratio is exactly 1 and no
    clip acts."""
    estimator = resolve_estimator(cfg.algo.advantage)
    if estimator.remedy is not None:
        first = estimator.remedy(cfg.algo.estimator_settings)
    else:
        explorers = [name for name in ESTIMATORS.names() if ESTIMATORS.get(name).explores]
        first = " or ".join(f"algo.advantage={name}" for name in explorers) or "another algo.advantage"
    off_policy = cfg.train.epochs * cfg.train.mini_batches > 1 or runtime_kind(cfg.runtime.kind).generates_ahead(
        cfg
    )
    return f"{first}, algo.entropy_coef (e.g. 0.005) or a lower train.lr" + (
        ", or algo.clip_high above algo.clip_low (clip-higher)" if off_policy else ""
    )


class CollapseWatch:
    """Warns when exploration collapses: pass@k on the held-out items (k > 1) falls below its value before
    training by more than twice its sampling error, or the policy's token entropy falls below a tenth of its mean
    over the first steps. Either means RL sharpens a few answers and loses the rest (greedy accuracy may rise).
    ``remedies`` is what the warnings suggest (``collapse_remedies``)."""

    ENTROPY_FLOOR = 0.1
    EARLY_STEPS = 5

    def __init__(self, n_items: int, before: dict[str, Any] | None, remedies: str) -> None:
        self.n_items = max(n_items, 1)
        self.remedies = remedies
        self.before = {k: v for k, v in (before or {}).items() if _is_pass_at_many(k, v)}
        self.early: list[float] = []
        self.warned: set[str] = set()

    def observe_eval(self, step: int, result: dict[str, Any]) -> list[str]:
        """The first call records the reference; later ones compare with it."""
        now = {k: v for k, v in result.items() if _is_pass_at_many(k, v)}
        if not self.before:
            self.before = now
            return []
        out = []
        for key, then in self.before.items():
            error = math.sqrt(max(then * (1 - then), 1e-12) / self.n_items)
            if key in now and then - now[key] > 2 * error and key not in self.warned:
                self.warned.add(key)
                out.append(
                    f"step {step}: {key} on held-out items fell from {then:.3f} to {now[key]:.3f} (more than "
                    f"twice its sampling error, {error:.3f}): exploration is collapsing. Try {self.remedies}; a "
                    "base little better than its majority answer (see the build log) tends to collapse whatever"
                )
        return out

    def observe_step(self, step: int, metrics: dict[str, float]) -> list[str]:
        return self._entropy_fell(step, metrics)

    def _entropy_fell(self, step: int, metrics: dict[str, float]) -> list[str]:
        entropy = metrics.get("entropy")
        if entropy is None or not math.isfinite(entropy):
            return []
        if len(self.early) < self.EARLY_STEPS:
            self.early.append(entropy)
            return []
        start = sum(self.early) / len(self.early)
        if entropy < self.ENTROPY_FLOOR * start and "entropy" not in self.warned:
            self.warned.add("entropy")
            return [
                f"step {step}: policy entropy fell to {entropy:.4f}, under a tenth of its early mean "
                f"({start:.4f}): sampled answers are becoming one answer. Try {self.remedies}"
            ]
        return []


def _is_pass_at_many(key: str, value: Any) -> bool:
    return key.startswith("pass@") and key != "pass@1" and isinstance(value, float)
