"""The learner: owns the policy and its optimizer, and makes every update of the policy's weights (RL steps and the
SFT steps some recipes interleave).

It is algorithm-blind: advantages arrive in the batch and the loss is the ``PolicyObjective`` it was given.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from verity.algo.objective import PolicyObjective
from verity.model.lora import load_trainable_state, save_policy, trainable_state_dict
from verity.model.modeling import autocast, full_attention_only, token_logprobs
from verity.rollout.sync_check import Probe, learner_logprobs
from verity.train.batching import Batch, micro_batches, split_indices
from verity.train.checkpoint import ShardedPart
from verity.train.config import TrainConfig
from verity.train.extrapolate import Trajectory
from verity.train.prefix import prompt_groups, shared_prefix_logprobs


def lr_factor(step: int, warmup: int, total: int, schedule: str, min_ratio: float = 0.0) -> float:
    """Share of the peak learning rate for optimizer step ``step`` (0-based): linear warm-up over ``warmup``
    steps, then constant, or a linear or cosine decay that reaches ``min_ratio`` at step ``total - 1``."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total - 1 <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / (total - 1 - warmup))
    shape = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * shape


def is_max_metric(key: str) -> bool:
    """A metric that is a maximum (``ratio/max``, ``mismatch/logprob_diff_max``): combined by taking the largest,
    not by weighting."""
    return key.endswith(("/max", "_max"))


class Learner:
    """AdamW with warm-up, gradient clipping, mini-batch updates and micro-batch gradient accumulation."""

    def __init__(
        self, model: nn.Module, train: TrainConfig, objective: PolicyObjective, temperature: float, seed: int
    ) -> None:
        self.model = model
        if train.gradient_checkpointing:
            # Non-reentrant checkpointing also works when only some parameters need gradients (LoRA).
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.train_cfg = train
        # A training forward through a KV cache needs the cache kept, which activation checkpointing drops.
        self.share_prompts = (
            train.share_prompts and not train.gradient_checkpointing and full_attention_only(model)
        )
        self.objective = objective
        self.temperature = temperature
        self.version = 0
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=train.lr, betas=train.betas, weight_decay=train.weight_decay)
        total = train.steps * train.epochs * train.mini_batches
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, train.warmup_steps, total, train.lr_schedule, train.min_lr_ratio),
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.trajectory = Trajectory(model, train.extrapolate) if train.extrapolate.enabled else None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def logprobs(self, batch: Batch, model: nn.Module | None = None) -> torch.Tensor:
        """Teacher-forced log-probs (B, T) of ``batch`` under ``model`` (default: the policy); 0 on padding."""
        model = model or self.model
        was_training = model.training
        model.eval()
        out = torch.zeros_like(batch.old_logprobs)
        order = batch.attention_mask.sum(-1).argsort()
        for i in range(0, len(batch), self.train_cfg.micro_batch_size):
            rows = order[i : i + self.train_cfg.micro_batch_size]
            micro = batch.select(rows).to(self.device)
            with autocast(self.device):
                lp, _ = token_logprobs(
                    model, micro, self.temperature, chunk_tokens=self.train_cfg.logit_chunk_tokens
                )
            out[rows, : lp.shape[1]] = (lp * micro.attention_mask).cpu()  # 0 on padding, however batched
        model.train(was_training)
        return out

    def step(self, batch: Batch, **loss_kwargs: float) -> dict[str, float]:
        """``epochs x mini_batches`` optimizer steps on ``batch``; returns averaged metrics. ``loss_kwargs`` (the
        controlled KL/entropy coefficients) go to ``policy_loss``.

        A step whose loss or gradient norm is not finite is skipped (no update) and reported as ``skipped``.
        """
        self.model.train()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}  # a metric averages over the updates that report it
        skipped = 0
        for _ in range(self.train_cfg.epochs):
            for rows in split_indices(len(batch), self.train_cfg.mini_batches, self.generator):
                metrics = self._update(batch.select(rows), loss_kwargs)
                if metrics.pop("skipped"):
                    skipped += 1
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1
        out = {k: v / counts[k] for k, v in sums.items()}
        out["skipped"] = float(skipped)
        out["lr"] = self.scheduler.get_last_lr()[0]
        self.version += 1
        if self.trajectory is not None:
            out.update(self._extrapolate())
        return out

    def _extrapolate(self) -> dict[str, float]:
        """Record the trajectory and, when due, jump along it (``train.extrapolate``): a weight update like any
        other, which the next weight sync carries to the engines. A jump is not an optimizer step: the learning
        rate schedule does not advance, and AdamW's moments are kept or reset per
        ``train.extrapolate.optimizer``."""
        assert self.trajectory is not None
        start = time.perf_counter()
        jumped = self.trajectory.observe(self.version)
        if jumped is not None and self.train_cfg.extrapolate.optimizer == "reset":
            self.optimizer.state.clear()
        seconds = time.perf_counter() - start  # recording the point, and the jump when one is due
        return {"extrapolate/applied": float(jumped is not None), "extrapolate/seconds": seconds, **(jumped or {})}

    def sft_step(self, batch: Batch, lr_scale: float = 1.0) -> float:
        """One supervised step on demonstrations (ReLIFT's interleaved SFT): token-mean NLL of ``batch``'s
        completion tokens, clipped like RL updates, at ``lr_scale`` times the current learning rate (the schedule
        does not advance). Returns the loss; a non-finite one changes nothing and is returned as NaN."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        tokens = max(float(batch.loss_mask.sum().item()), 1.0)
        total = 0.0
        for micro, weight in self._passes(batch, whole=True):
            micro = micro.to(self.device)
            with autocast(self.device):
                logprobs, _ = self._forward(micro, 1.0, with_entropy=False)
            loss = -(logprobs * micro.loss_mask).sum() / tokens * weight
            loss.backward()
            total += loss.item()
        finite, sums = self._agree(math.isfinite(total), {"loss": total})
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            return float("nan")
        self._clip_grad_norm()
        saved = [group["lr"] for group in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["lr"] *= lr_scale
        self.optimizer.step()
        for group, lr in zip(self.optimizer.param_groups, saved, strict=True):
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        return sums["loss"]

    def _update(self, mini: Batch, loss_kwargs: dict[str, float]) -> dict[str, float]:
        token_count = float(mini.loss_mask.sum().item())
        seq_count = float((mini.loss_mask.sum(-1) > 0).sum().item())
        self.optimizer.zero_grad(set_to_none=True)
        rows = self._rows_with_gradient(mini, loss_kwargs)
        skipped_rows = 1.0 - len(rows) / len(mini)
        if len(rows):
            normalizers = {"token_normalizer": max(token_count, 1.0), "seq_normalizer": max(seq_count, 1.0)}
            trained = mini.select(rows) if len(rows) < len(mini) else mini
            finite, sums = self._accumulate(trained, normalizers, loss_kwargs)
        else:
            # A zero gradient, not a missing one: AdamW still applies its momentum and weight decay, as it would
            # after a backward pass over rows whose advantages are all 0.
            for p in self.model.parameters():
                if p.requires_grad:
                    p.grad = torch.zeros_like(p)
            finite, sums = True, {"loss/policy": 0.0, "loss/total": 0.0}
        grad_norm = self._clip_grad_norm()
        if not finite or not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return {"skipped": 1.0}
        self.optimizer.step()
        self.scheduler.step()
        sums["grad_norm"] = grad_norm
        sums["rows_skipped"] = skipped_rows
        sums["skipped"] = 0.0
        return sums

    def _accumulate(
        self, batch: Batch, normalizers: dict[str, float], loss_kwargs: dict[str, float]
    ) -> tuple[bool, dict[str, float]]:
        """Forward and backward over ``batch`` in micro-batches, gradients accumulating; returns whether every loss
        was finite, and the metrics (``loss/*`` summed, maxima (``is_max_metric``) the largest, the rest token
        means over ``batch``)."""
        tokens = max(float(batch.loss_mask.sum().item()), 1.0)
        sums: dict[str, float] = {}
        finite = True
        for micro, weight in self._passes(batch):
            micro = micro.to(self.device)
            with autocast(self.device):
                logprobs, entropy = self._forward(micro, self.temperature, with_entropy=True)
            loss, metrics = self.objective(
                logprobs,
                micro.old_logprobs,
                micro.advantages,
                micro.loss_mask,
                ref_logprobs=micro.ref_logprobs,
                entropy=entropy,
                prox_logprobs=micro.prox_logprobs,
                **normalizers,
                **loss_kwargs,
            )
            # A non-finite loss still runs its backward: a sharded group's passes must stay in step.
            finite = finite and bool(torch.isfinite(loss))
            (loss * weight).backward()
            share = float(micro.loss_mask.sum().item()) / tokens * weight
            for k, v in metrics.items():
                if is_max_metric(k):
                    if weight:
                        sums[k] = max(sums.get(k, v), v)
                else:
                    sums[k] = sums.get(k, 0.0) + (v * weight if k.startswith("loss/") else v * share)
        return self._agree(finite, sums)

    def _passes(self, batch: Batch, whole: bool = False) -> list[tuple[Batch, float]]:
        """The forward/backward passes this learner runs over ``batch``, each with the weight of its loss: the
        micro-batches (or ``whole``: the batch in one pass). A sharded learner takes its share of the rows and
        adds passes of weight 0 so that every rank runs as many as the busiest."""
        if whole:
            return [(batch, 1.0)]
        return [
            (m, 1.0)
            for m in micro_batches(batch, self.train_cfg.micro_batch_size, self.train_cfg.micro_batch_tokens)
        ]

    def _forward(
        self, micro: Batch, temperature: float, with_entropy: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs and entropies (B, T) of a micro-batch under the policy, with gradients."""
        chunk = self.train_cfg.logit_chunk_tokens
        groups = prompt_groups(micro) if self.share_prompts else None
        if groups is None:
            return token_logprobs(self.model, micro, temperature, with_entropy, chunk)
        return shared_prefix_logprobs(self.model, micro, groups, temperature, with_entropy, chunk_tokens=chunk)

    def _agree(self, finite: bool, sums: dict[str, float]) -> tuple[bool, dict[str, float]]:
        """Whether every loss was finite, and the metric sums, over the whole group (here: this learner)."""
        return finite, sums

    def _clip_grad_norm(self) -> float:
        """Clip the gradients to ``train.max_grad_norm`` by their global norm; returns the norm before."""
        return float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train_cfg.max_grad_norm))

    def _rows_with_gradient(self, mini: Batch, loss_kwargs: dict[str, float]) -> torch.Tensor:
        """Indices of the rows that can contribute to the gradient. Every policy loss here is a function of the
        token's ratio times its advantage, and the aggregations sum rows over normalizers counted on the whole
        mini-batch, so a row whose advantages are all 0 adds exactly 0 unless a KL or entropy term is in play.
        With ``train.skip_zero_advantage`` such rows are left out (in GRPO, every group whose samples all got the
        same reward), except when the KL or entropy measured over all rows feeds a loss term or a controller."""
        everything = torch.arange(len(mini))
        every_row = self.objective.reads_every_row(loss_kwargs.get("entropy_coef"))
        if not self.train_cfg.skip_zero_advantage or mini.ref_logprobs is not None or every_row:
            return everything
        return everything[(mini.advantages * mini.loss_mask).ne(0).any(-1)]

    def probe_logprobs(self, probe: Probe) -> list[list[float]]:
        """The policy's teacher-forced log-probs of a sync probe (temperature 1), which a verified engine must
        match."""
        return learner_logprobs(self.model, probe, pad_id=0)

    def weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """What an engine needs to follow the policy, as ``(name, tensor)`` pairs read lazily: every weight, or
        only the adapters of a LoRA model. The tensors are the live ones: copy them before the next step."""
        return iter(trainable_state_dict(self.model).items())

    def save_model(self, path: Path, tokenizer: Any, lora_save: str = "merged") -> None:
        """The policy in Hugging Face format (a LoRA model merged or as its adapter, per ``lora_save``)."""
        save_policy(self.model, tokenizer, path, lora_save)

    def close(self) -> None:
        """Nothing to release: the model is an ordinary module."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": trainable_state_dict(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "version": self.version,
            **({"trajectory": self.trajectory.state_dict()} if self.trajectory is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if isinstance(state, ShardedPart):
            raise ValueError(
                "this checkpoint holds a sharded learner group's state: resume with train.strategy=fsdp2"
            )
        load_trainable_state(self.model, state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.version = state["version"]
        if self.trajectory is not None:
            if "trajectory" in state:
                self.trajectory.load_state_dict(state["trajectory"])
            else:  # a checkpoint of a run without extrapolation: the window starts at the resumed point
                self.trajectory.restart(self.version)
