"""Learning from demonstrations inside the RL run: ViSurf (the reference joins its group), and SFT rounds on
queued demonstrations (``verity.data.demos``): ReLIFT's references, Cog-Rethinker's rescued re-rollouts and expert
iteration's filtered own successes."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from verity.data.config import DataConfig, ExpertIterationConfig
from verity.data.demos import Demonstration
from verity.data.groups import split_groups
from verity.data.metrics import REFERENCE
from verity.data.prompts import reference_solution
from verity.step.collect import Encode
from verity.train.batching import Batch, collate
from verity.train.sft import demonstration_batch
from verity.types import Completion, Item, Rollout, Score

Scorer = Callable[[list[Item], list[str]], list[Score]]


def add_references(
    rollouts: list[Rollout], field: str, tokenizer: Any, learner: Any, score: Scorer
) -> list[Rollout]:
    """ViSurf (Liu et al. 2025): each group whose item has a reference solution gains it as one more member,
    scored by the verifiers like any completion, so group-relative advantages rank it against the samples.

    The engine did not produce it, so its behaviour log-probs are the learner's own (teacher-forced, at the
    sampling temperature) under the weights that produced the group. The PPO ratio of the reference is then
    ``pi_theta / pi_old`` exactly as for sampled rows: 1 at the first update, whose gradient is
    ``A * grad log pi(reference)`` (an advantage-weighted SFT term), and clipped after that, which bounds how far
    one step moves towards a sequence the policy would rarely sample. No importance weight to an expert
    behaviour policy is applied (there is none to evaluate); the clip is the only off-policy control.
    """
    refs: list[Rollout] = []
    for group in split_groups(rollouts):
        head = group[0]
        text = reference_solution(head.item, field)
        if text is None:
            continue
        ids = [*tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]
        completion = Completion(ids, [0.0] * len(ids), text, REFERENCE, head.completion.version)
        refs.append(Rollout(head.item, head.group, head.prompt_ids, completion))
    if not refs:
        return rollouts
    logprobs = learner.logprobs(collate(refs, tokenizer.pad_token_id))  # (R, T)
    scores = score([r.item for r in refs], [r.completion.text for r in refs])
    for row, (ref, s) in enumerate(zip(refs, scores, strict=True)):
        start = len(ref.prompt_ids)
        ref.completion.logprobs = logprobs[row, start : start + len(ref.completion.token_ids)].tolist()
        refs[row] = replace(ref, score=s)
    return sorted(rollouts + refs, key=lambda r: r.group)


def demonstration_batch_of(tokenizer: Any, encode: Encode, demos: list[Demonstration]) -> Batch:
    """``demos`` as a batch: each text (and end-of-sequence) after its item's direct prompt, the text masked in."""
    targets = [[*tokenizer.encode(d.text, add_special_tokens=False), tokenizer.eos_token_id] for d in demos]
    return demonstration_batch([encode(d.item) for d in demos], targets, tokenizer.pad_token_id)


def sft_update(
    learner: Any, tokenizer: Any, encode: Encode, demos: list[Demonstration], lr_scale: float, prefix: str
) -> dict[str, float]:
    """One SFT step, token-mean NLL of ``demos`` (ReLIFT, Ma et al. 2025: reference solutions of items no rollout
    solved; Cog-Rethinker: rescued re-thinking rollouts; expert iteration: own successes), taken by the learner at
    ``lr_scale`` times its current rate. Returns ``<prefix>/loss`` and ``<prefix>/items``."""
    loss = learner.sft_step(demonstration_batch_of(tokenizer, encode, demos), lr_scale)
    return {f"{prefix}/loss": loss, f"{prefix}/items": float(len(demos)) if math.isfinite(loss) else 0.0}


def sequence_nll(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row token-mean negative log-likelihood ``-sum_t m_t lp_t / max(sum_t m_t, 1)``: (B, T) -> (B,)."""
    return -(logprobs * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def nll_window(nll: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """BFS-Prover-V2's adaptive filter (Xin et al. 2025): keep the samples whose NLL under the current policy lies
    in ``[Q(low), Q(high)]``, Q the empirical quantile of ``nll`` (linear interpolation): (B,) -> (B,) bool.

    The lower tail is what the policy already writes with confidence, the upper tail the noisiest successes.
    The bounds are recomputed from the current policy at every round, so they move as it improves. Departure:
    the paper filters tactics (steps) by perplexity; a single-turn completion is one step, scored by its token-mean
    NLL (log-perplexity), which ranks samples as perplexity does."""
    lo, hi = torch.quantile(nll.double(), torch.tensor([low, high], dtype=torch.double))
    return (nll.double() >= lo) & (nll.double() <= hi)


def expert_update(
    learner: Any, tokenizer: Any, encode: Encode, demos: list[Demonstration], cfg: ExpertIterationConfig
) -> dict[str, float]:
    """An expert-iteration round: the queued successes scored by the current policy, filtered by ``nll_window``,
    and trained on in SFT steps of ``cfg.batch_size``. Returns the counts, the NLL window and the mean loss under
    ``expert_iteration/``."""
    batch = demonstration_batch_of(tokenizer, encode, demos)
    nll = sequence_nll(learner.logprobs(batch), batch.loss_mask)  # (B,)
    keep = nll_window(nll, cfg.low_quantile, cfg.high_quantile)
    kept = [d for d, k in zip(demos, keep.tolist(), strict=True) if k]
    chunks = [kept[i : i + cfg.batch_size] for i in range(0, len(kept), cfg.batch_size)]
    losses = [learner.sft_step(demonstration_batch_of(tokenizer, encode, c), cfg.lr_scale) for c in chunks]
    trained = [(len(c), loss) for c, loss in zip(chunks, losses, strict=True) if math.isfinite(loss)]
    metrics = {
        "expert_iteration/candidates": float(len(demos)),
        "expert_iteration/items": float(sum(n for n, _ in trained)),
    }
    if trained:
        metrics["expert_iteration/loss"] = sum(loss for _, loss in trained) / len(trained)
    if kept:
        metrics["expert_iteration/nll_low"] = nll[keep].min().item()
        metrics["expert_iteration/nll_high"] = nll[keep].max().item()
    return metrics


def demonstration_updates(
    learner: Any, tokenizer: Any, encode: Encode, data: DataConfig, rounds: list[tuple[str, list[Demonstration]]]
) -> dict[str, float]:
    """The SFT rounds a step ends with (``Sampler.demonstrations``): expert iteration filters its queue first; the
    other recipes take one SFT step on what they queued."""
    metrics: dict[str, float] = {}
    for recipe, demos in rounds:
        cfg = getattr(data, recipe)
        if isinstance(cfg, ExpertIterationConfig):
            metrics.update(expert_update(learner, tokenizer, encode, demos, cfg))
        else:
            metrics.update(sft_update(learner, tokenizer, encode, demos, cfg.lr_scale, recipe))
    return metrics
