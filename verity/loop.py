"""The RL loop: sample items, roll out, score, compute advantages, update the policy, sync weights, repeat.

GRPO by default (group-relative advantages, PPO-clip surrogate, token-mean aggregation); every other estimator
and loss is a config choice in ``verity.algo``. The loop itself never branches on the algorithm.
"""

from __future__ import annotations

import contextlib
import errno
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from rich.console import Console

from verity.algo.objective import advantage_inputs, compute_advantages, needs_proximal, shape_rewards
from verity.algo.registry import resolve_estimator
from verity.build import Parts, build_parts
from verity.config import Config
from verity.data.metrics import field_metrics, reward_range, task_metrics
from verity.data.size import pool_warnings, question_pools
from verity.eval import EvalConfig, evaluate, evaluate_episodes, pass_at_k
from verity.rollout.turns import episode_metrics, turn_tensors
from verity.run.base import BUILTINS, base_warnings
from verity.run.checks import (
    AllScoresFailed,
    CollapseWatch,
    RewardWatch,
    check_device,
    collapse_remedies,
    resolve_threads,
    schedule_extension,
    settings_warnings,
    unlogged_stage_metrics,
)
from verity.run.console import LOG_NAME, output_to, terminal_err
from verity.run.progress import RunProgress
from verity.run.rundir import RunDir, RunDirError
from verity.run.runs import read_summary
from verity.run.stop import StopFlag
from verity.run.watches import GapWatch, NoSignal, SignalWatch, group_signal
from verity.runtime.base import WorkerRestart
from verity.step.collect import collect_rollouts
from verity.step.guidance import demonstration_updates
from verity.tracking.trackers import build_tracker
from verity.train.batching import Batch, collate
from verity.types import Rollout


class TrainingStopped(RuntimeError):
    """The run cannot go on (e.g. too many non-finite losses in a row); the last checkpoint stays valid."""


def rl_step(parts: Parts) -> tuple[dict[str, float], list[Rollout]]:
    """One step: rollouts of a batch of prompts, then ``epochs x mini_batches`` updates. Returns metrics."""
    cfg, learner, state = parts.cfg, parts.learner, parts.algo_state
    rollouts, data_metrics = collect_rollouts(
        parts.sampler, parts.runtime, parts.encode, cfg.rollout.prompts_per_step, parts.augment
    )
    start = time.perf_counter()
    rewards = torch.tensor([r.reward for r in rollouts], dtype=torch.float32)  # (N,)
    groups = torch.tensor([r.group for r in rollouts])  # (N,)
    lengths = torch.tensor([len(r.completion.token_ids) for r in rollouts], dtype=torch.float32)  # (N,)
    shaped, metrics = shape_rewards(cfg.algo, rewards, lengths, groups, [r.completion.token_ids for r in rollouts])
    batch = collate(rollouts, parts.tokenizer.pad_token_id)
    if parts.ref_model is not None:
        batch.ref_logprobs = learner.logprobs(batch, parts.ref_model)
    if needs_proximal(cfg.algo):
        batch.prox_logprobs = learner.logprobs(batch)
    inputs = declared_inputs(parts, rollouts, batch)
    batch.advantages = compute_advantages(
        cfg.algo,
        shaped,
        groups,
        batch.loss_mask,
        state=state,
        old_logprobs=batch.old_logprobs,
        ref_logprobs=batch.ref_logprobs,
        outcomes=rewards,
        **inputs,
    )
    metrics.update(learner.step(batch, **state.loss_kwargs()))
    if parts.critic is not None:
        metrics.update(parts.critic.fit(cfg.algo, batch, shaped, inputs["values"], state.kl.coef))
    metrics.update(rollout_metrics(rollouts, rewards, lengths, cfg.eval, batch))
    metrics.update(state.update(metrics, len(rollouts)))
    if rounds := parts.sampler.demonstrations():
        metrics.update(demonstration_updates(learner, parts.tokenizer, parts.encode, cfg.data, rounds))
    metrics["time/train"] = time.perf_counter() - start
    parts.runtime.sync(learner)
    metrics.update(parts.runtime.timings)
    metrics.update(parts.runtime.executor.stats())
    metrics.update(data_metrics)
    metrics.update(task_metrics(rollouts, cfg.eval.threshold))
    if parts.workflow.episodic:  # turns also carry tree-search and process-reward steps, which are not episodes
        metrics.update(episode_metrics(rollouts))
    parts.sampler.end_step(metrics)
    metrics.update(parts.sampler.metrics())
    return metrics, rollouts


def declared_inputs(parts: Parts, rollouts: list[Rollout], batch: Batch) -> dict[str, Any]:
    """The optional inputs the configured advantage estimator declares, computed and nothing else."""
    providers: dict[str, Callable[[], Any]] = {
        "values": lambda: parts.critic.values(batch) if parts.critic is not None else None,  # (N, T)
        "turns": lambda: turn_tensors(rollouts, batch.loss_mask.shape[1], parts.engine.decode),
        "tasks": lambda: [r.item.task for r in rollouts],
        "item_ids": lambda: [r.item.id for r in rollouts],
    }
    return {name: providers[name]() for name in advantage_inputs(parts.cfg.algo)}


def rollout_metrics(
    rollouts: list[Rollout], rewards: torch.Tensor, lengths: torch.Tensor, eval_cfg: EvalConfig, batch: Batch
) -> dict[str, float]:
    """The batch's rewards, accuracy and lengths, and ``pass@k`` (k = ``eval.k``) of the training groups: the
    unbiased pass@k of each prompt's samples, averaged over the prompts with at least k of them."""
    correct = (rewards >= eval_cfg.threshold).float()
    metrics = {
        "reward/mean": rewards.mean().item(),
        "reward/std": rewards.std().item() if len(rewards) > 1 else 0.0,
        "accuracy": correct.mean().item(),
        "response_len/mean": lengths.mean().item(),
        "truncated": sum(r.completion.finish_reason == "length" for r in rollouts) / len(rollouts),
        "tokens": float(batch.attention_mask.sum().item()),
    }
    k = eval_cfg.k
    counts: dict[int, list[int]] = {}
    for rollout, hit in zip(rollouts, correct.tolist(), strict=True):
        counts.setdefault(rollout.group, []).append(int(hit))
    groups = [(len(hits), sum(hits)) for hits in counts.values() if len(hits) >= k]
    if k > 1 and groups:
        metrics[f"pass@{k}"] = sum(pass_at_k(n, c, k) for n, c in groups) / len(groups)
    return metrics


def run_eval(parts: Parts) -> dict[str, Any]:
    cfg = parts.cfg
    if parts.workflow.episodic:
        return evaluate_episodes(
            parts.workflow,
            parts.engine,
            parts.encode,
            parts.eval_items,
            parts.runtime.executor.score,
            max_new_tokens=cfg.rollout.max_new_tokens,
            threshold=cfg.eval.threshold,
        )
    result = evaluate(
        parts.engine,
        parts.encode,
        parts.eval_items,
        parts.runtime.executor.score,
        max_new_tokens=cfg.rollout.max_new_tokens,
        k=cfg.eval.k,
        temperature=cfg.eval.temperature,
        threshold=cfg.eval.threshold,
    )
    # Take the scoring counts here, so the next training step's scored/failures count only its own rollouts.
    result.update({f"verifier/{k}": v for k, v in parts.runtime.executor.stats().items()})
    return result


def train(cfg: Config, *, resume: bool = False, quiet: bool = False, log_output: bool = False) -> dict[str, Any]:
    """Run (or resume) the RL loop described by ``cfg``; returns the run summary (also in summary.json). With
    ``log_output`` (the ``verity`` command), everything but Verity's own lines goes to ``RUN_DIR/verity.log``."""
    check_device(cfg.runtime.device)
    resolve_threads(cfg, small_model=cfg.model.name in BUILTINS)
    run = RunDir(cfg)
    run.prepare(resume)
    try:
        with output_to(run.path / LOG_NAME) if log_output else contextlib.nullcontext(), StopFlag() as stop:
            return _train_locked(cfg, run, resume, quiet, stop)
    finally:
        run.lock.release()


def _train_locked(cfg: Config, run: RunDir, resume: bool, quiet: bool, stop: StopFlag) -> dict[str, Any]:
    started = time.time()
    progress = RunProgress(
        max(cfg.train.steps, 1),
        quiet=quiet or cfg.tracking.quiet,
        console=Console(file=terminal_err()),
        time_limit_s=cfg.train.time_limit_s,
    )
    summary: dict[str, Any] = {
        "name": cfg.name,
        "status": "running",
        "steps": 0,
        "total_steps": cfg.train.steps,
        "base_model": cfg.model.name,
        "warnings": [],
        "restarts": restart_counts({}),
        "final_model": None,
        **({"time_limit_s": cfg.train.time_limit_s} if cfg.train.time_limit_s is not None else {}),
        **(read_summary(run.path) if resume else {}),  # what a start-up interrupted before resuming keeps
    }
    parts: Parts | None = None

    def forced_stop() -> None:
        summary["status"] = "stopped"
        run.write_summary(summary)

    stop.on_force = forced_stop
    try:
        parts = build_parts(cfg, progress.message)
        stop.check()  # a Ctrl-C that a library swallowed while the engine started
        summary["base_model"] = parts.model_path
        return _run(cfg, run, resume, progress, stop, parts, summary, started)
    except BaseException as err:
        interrupted = stop.requested or isinstance(err, KeyboardInterrupt)
        summary["status"] = "stopped" if interrupted else "failed"
        if not interrupted:
            summary["error"] = str(err).splitlines()[0] if str(err) else type(err).__name__
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(run, err) from None  # summary, metrics or samples: checkpoints say it themselves
        if interrupted and not isinstance(err, KeyboardInterrupt):
            raise KeyboardInterrupt from None  # what the interruption broke (an engine start-up) is no error
        raise
    finally:
        summary.setdefault("wall_time_s", time.time() - started)
        with contextlib.suppress(OSError):  # a full disk must not hide the error that stopped the run
            run.write_summary(summary)
        if parts is not None:
            # After an interruption the processes behind the parts may be gone already: closing is best effort.
            with contextlib.suppress(Exception) if summary["status"] == "stopped" else contextlib.nullcontext():
                parts.close()


def _run(
    cfg: Config,
    run: RunDir,
    resume: bool,
    progress: RunProgress,
    stop: StopFlag,
    parts: Parts,
    summary: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    earlier_wall = 0.0
    step, time_offset = 0, 0.0
    saved_at = -1  # the step of the last checkpoint this process wrote or resumed from
    if resume:
        previous = read_summary(run.path)
        state = run.load()
        parts.load_state_dict(state)
        summary.clear()
        summary.update(state["summary"])
        step, saved_at = state["step"], state["step"]
        earlier_wall = summary.get("wall_time_s", 0.0)
        time_offset = run.truncate_logs(step)
        resumed = note_resume(summary, step, previous)
        if previous.get("status") == "stopped":  # a Ctrl-C or SIGTERM: nothing went wrong
            progress.message(resumed)
        else:
            _warn(summary, progress, [resumed])
        _warn(summary, progress, schedule_extension(cfg, step, summary["total_steps"]))
        summary.update(status="running", total_steps=cfg.train.steps, final_model=None)
    _warn(summary, progress, settings_warnings(cfg) + base_warnings(parts.model_path))
    pools = question_pools(parts.sampler.sources, parts.sampler.held_out)
    _warn(summary, progress, pool_warnings(cfg, pools))
    tracker = build_tracker(
        cfg.tracking.trackers, run.path, cfg.name, cfg.model_dump(mode="json"), cfg.tracking.project, time_offset
    )

    def checkpoint() -> None:
        nonlocal saved_at
        summary["wall_time_s"] = earlier_wall + time.time() - started
        run.save(step, {**parts.state_dict(), "summary": summary})
        saved_at = step
        run.write_summary(summary)

    watch = RewardWatch(cfg.reward.timeout_s)
    collapse = CollapseWatch(len(parts.eval_items), summary.get("eval_before"), collapse_remedies(cfg))
    no_signal = SignalWatch(pools, cfg.rollout.temperature, cfg.train.stop_without_signal)
    group_relative = resolve_estimator(cfg.algo.advantage).group_relative
    gap = GapWatch(len(parts.eval_items))
    bad_steps = 0
    try:
        if not resume:
            summary["eval_before"] = _eval_and_log(parts, tracker, 0, progress)
            collapse.observe_eval(0, summary["eval_before"])
            gap.observe_eval(0, summary["eval_before"])
            summary["best_accuracy"] = summary["eval_before"]["accuracy"]
            run.write_summary(summary)
        progress.start_step = step
        rl_started = time.time()
        limit = cfg.train.time_limit_s
        stop.deferred = True  # from here a first Ctrl-C ends the step and writes a checkpoint
        with progress:
            while step < cfg.train.steps and not stop.requested:
                if limit is not None and step > progress.start_step and time.time() - rl_started >= limit:
                    progress.message(f"train.time_limit_s={limit:g} reached after {step} steps")
                    if saved_at != step:
                        checkpoint()
                    break
                metrics, rollouts = rl_step(parts)
                step += 1
                _warn(summary, progress, [note_restart(summary, step, r) for r in parts.runtime.restarts()])
                try:
                    _warn(summary, progress, watch.observe(step, rollouts))
                except AllScoresFailed as err:
                    raise TrainingStopped(str(err)) from None
                if step == progress.start_step + 1:
                    _warn(summary, progress, unlogged_stage_metrics(cfg, metrics))
                bad_steps = bad_steps + 1 if metrics["skipped"] else 0
                if bad_steps:
                    _warn(summary, progress, [f"step {step}: non-finite loss or gradient, update skipped"])
                if bad_steps >= cfg.train.max_bad_steps:
                    raise TrainingStopped(
                        f"{bad_steps} steps in a row had a non-finite loss or gradient; stopping. "
                        "Lower train.lr or check the rewards. The last checkpoint is intact."
                    )
                metrics["time/step"] = sum(metrics[k] for k in ("time/generate", "time/score", "time/train"))
                metrics["throughput/tokens_per_s"] = metrics["tokens"] / max(metrics["time/step"], 1e-9)
                metrics.update(reward_range(rollouts))
                signal = group_signal(rollouts, cfg.eval.threshold)
                metrics.update(signal)
                try:
                    if group_relative:
                        _warn(summary, progress, no_signal.observe(step, signal))
                except NoSignal as err:
                    raise TrainingStopped(str(err)) from None
                _warn(summary, progress, gap.observe_step(step, metrics["accuracy"]))
                metrics.update(field_metrics(rollouts, cfg.tracking.group_by, cfg.eval.threshold))
                if step % cfg.tracking.log_every == 0:
                    tracker.log(step, metrics)
                if cfg.tracking.samples_every and step % cfg.tracking.samples_every == 0:
                    run.append_samples(step, rollouts, cfg.tracking.samples_per_step)
                _warn(summary, progress, parts.algo_state.take_warnings() + collapse.observe_step(step, metrics))
                if cfg.eval.every and step % cfg.eval.every == 0 and step < cfg.train.steps:
                    result = _eval_and_log(parts, tracker, step, progress)
                    summary["best_accuracy"] = max(summary["best_accuracy"], result["accuracy"])
                    _warn(summary, progress, collapse.observe_eval(step, result))
                    gap.observe_eval(step, result)
                progress.update(step, metrics)
                summary["steps"] = step
                # The last step too, so a finished run can be extended with --resume train.steps=...
                if step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps:
                    checkpoint()
        stop.deferred = False
        if stop.requested:
            if saved_at != step:  # rewriting the checkpoint ``latest`` names would leave a moment with none
                checkpoint()
            summary["status"] = "stopped"
        else:
            summary["eval_after"] = _eval_and_log(parts, tracker, step, progress)
            summary["best_accuracy"] = max(summary["best_accuracy"], summary["eval_after"]["accuracy"])
            _warn(summary, progress, collapse.observe_eval(step, summary["eval_after"]))
            summary["final_model"] = str(run.save_model(parts.learner, parts.processor or parts.tokenizer))
            summary["status"] = "finished"
    finally:
        summary["wall_time_s"] = earlier_wall + time.time() - started
        tracker.close()
    return summary


def disk_full(run: RunDir, err: OSError) -> RunDirError:
    return RunDirError(
        f"writing {err.filename or 'under ' + str(run.path)} failed ({err.strerror or err}); "
        f"{run.what_next('free space')}"
    )


def restart_counts(summary: dict[str, Any]) -> dict[str, int]:
    """The summary's restarts: resumes of the driver and replaced workers by kind (none in an older summary)."""
    return summary.setdefault("restarts", {"driver": 0, "rollout": 0, "reward": 0})


def note_resume(summary: dict[str, Any], step: int, previous: dict[str, Any]) -> str:
    """Count a driver restart; the warning says how the previous driver ended, as its summary.json left it:
    'running' means it was killed (or its machine died), so the steps after ``step`` are trained again."""
    restart_counts(summary)["driver"] += 1
    ended = previous.get("status", "unknown")
    how = "was killed" if ended == "running" else f"ended with status {ended!r}"
    return f"resumed from the checkpoint of step {step}: the previous driver {how}"


def note_restart(summary: dict[str, Any], step: int, restart: WorkerRestart) -> str:
    """Count a replaced worker; the warning names it and the cause."""
    counts = restart_counts(summary)
    counts[restart.kind] = counts.get(restart.kind, 0) + 1
    return f"step {step}: {restart.kind} worker {restart.rank} died and was replaced ({restart.cause})"


def _warn(summary: dict[str, Any], progress: RunProgress, warnings: list[str]) -> None:
    """Record each warning in the summary and show it."""
    for warning in warnings:
        summary["warnings"].append(warning)
        progress.message(f"warning: {warning}")


def _eval_and_log(parts: Parts, tracker: Any, step: int, progress: RunProgress) -> dict[str, Any]:
    result = run_eval(parts)
    numbers = {f"eval/{k}": v for k, v in result.items() if isinstance(v, float) and math.isfinite(v)}
    tracker.log(step, numbers)
    progress.update(step, numbers)
    progress.message(
        f"step {step}: held-out accuracy {result['accuracy']:.3f}"
        + "".join(f", {k} {v:.3f}" for k, v in result.items() if k.startswith(("pass@", "maj@")))
    )
    return result
