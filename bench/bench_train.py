"""Training-step throughput: achieved fraction of the measured matmul peak, and the padding share of batches.

The batch is one RL step of the quickstart setting (8 prompts x group 8, 12 new tokens) sampled by the engine
from the quickstart model; the 15M model trains on the same token sequences (it shares the tokenizer). A step is
one learner update (forward, backward, AdamW) with GRPO advantages; its useful work is 3 x forward FLOPs per real
token (Kaplan et al. 2020: backward ~ 2 x forward), so computing on padding lowers the fraction. With shared
prompts (the default) each group's prompt is computed once: the script prints the FLOPs actually computed
(hardware use) and the FLOPs a plain full-sequence forward would need for the same result.

    python3 -m bench.bench_train --model all --threads 1
"""

from __future__ import annotations

import argparse

import torch

from bench.common import (
    MODELS,
    bench_prompts,
    best_of,
    flops_per_token,
    load_model,
    machine_note,
    matmul_peak,
    set_threads,
)
from verity.algo.config import AlgoConfig
from verity.algo.objective import PolicyObjective
from verity.rollout.hf import HFEngine
from verity.train.batching import Batch, collate, micro_batches, padding_share
from verity.train.config import TrainConfig
from verity.train.learner import Learner
from verity.train.prefix import length_buckets, prompt_groups
from verity.types import Item, Rollout, SamplingParams


def rl_batch(prompts_n: int, group: int, new_tokens: int) -> Batch:
    """One step's rollouts from the quickstart model, with seeded random group-relative-like advantages."""
    model, tokenizer = load_model("quickstart")
    prompts = bench_prompts(tokenizer, prompts_n)
    items = [Item(id=str(i), task="chain_sum", prompt="") for i in range(prompts_n)]
    engine = HFEngine(model, tokenizer, batch_size=prompts_n * group)
    outputs = engine.generate(prompts, SamplingParams(new_tokens, n=group))
    rollouts = [
        Rollout(item, g, ids, c)
        for g, (item, ids, group_out) in enumerate(zip(items, prompts, outputs, strict=True))
        for c in group_out
    ]
    batch = collate(rollouts, tokenizer.pad_token_id)
    gen = torch.Generator().manual_seed(0)
    batch.advantages = batch.loss_mask * torch.randn(len(batch), 1, generator=gen)
    return batch


def executed_tokens(batch: Batch) -> tuple[int, int]:
    """Real and computed (real + padding) tokens of a shared-prompt forward: each distinct prompt once,
    left-padded to the longest, plus every continuation, right-padded to the longest of its length bucket."""
    starts, _, prefixes = prompt_groups(batch)
    suffix = (batch.attention_mask.sum(-1) - starts).tolist()
    real = sum(len(p) for p in prefixes) + sum(suffix)
    buckets = length_buckets(suffix)
    padded = len(prefixes) * max(map(len, prefixes)) + sum(len(b) * max(suffix[i] for i in b) for b in buckets)
    return real, padded


def bench_model(name: str, batch: Batch, train: TrainConfig, repeats: int, peak: float) -> None:
    model, _ = load_model(name)
    learner = Learner(model.train(), train, PolicyObjective(AlgoConfig()), temperature=1.0, seed=0)
    seconds, _ = best_of(lambda: learner.step(batch), repeats)
    real = int(batch.attention_mask.sum())
    per_token = 3 * flops_per_token(model, int(real / len(batch) / 2))
    executed, padded = executed_tokens(batch) if learner.share_prompts else (real, 0)
    parts = micro_batches(batch, train.micro_batch_size, train.micro_batch_tokens)
    print(f"model {name}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    print(f"  step {seconds:.3f} s for {len(batch)} sequences, {real} real tokens ({executed} computed)")
    print(
        f"  computed: {per_token * executed / seconds / 1e9:.1f} GFLOP/s = "
        f"{per_token * executed / seconds / peak:.1%} of matmul peak (hardware use)"
    )
    print(
        f"  full-sequence equivalent: {per_token * real / seconds / 1e9:.1f} GFLOP/s = "
        f"{per_token * real / seconds / peak:.1%} of peak (what a plain forward would need for the same result)"
    )
    print(
        f"  padding share: {padding_share([batch]):.1%} as one padded batch, {padding_share(parts):.1%} in "
        f"{len(parts)} length-sorted micro-batches"
        + (f", {1 - executed / padded:.1%} in the shared-prompt layout" if padded else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--micro-batch-size", type=int, default=64)
    parser.add_argument("--micro-batch-tokens", type=int)
    parser.add_argument("--no-share-prompts", action="store_true", help="plain forward over every full sequence")
    args = parser.parse_args()
    set_threads(args.threads)
    peak = matmul_peak()
    print(f"{machine_note()}; matmul peak {peak / 1e9:.1f} GFLOP/s")
    batch = rl_batch(8, 8, 12)
    train = TrainConfig(
        lr=1e-5,
        micro_batch_size=args.micro_batch_size,
        micro_batch_tokens=args.micro_batch_tokens,
        share_prompts=not args.no_share_prompts,
    )
    for name in MODELS if args.model == "all" else (args.model,):
        bench_model(name, batch, train, args.repeats, peak)


if __name__ == "__main__":
    main()
