"""Rollout tokens/s: Verity's engine vs ``model.generate`` on the same model, prompts and lengths.

Batch of 8 prompts x group 8 (64 sequences), sampling at temperature 1 with no top-k/top-p truncation. Tokens are
completion tokens up to and including the stop token: the work a trainer can use. ``model.generate`` gets every
prompt repeated G times (how a trainer without prefix sharing calls it). Also prints the model's FLOPs per token
and the achieved fraction of the measured matmul peak.

    python3 bench/bench_rollout.py --model quickstart --threads 1
"""

from __future__ import annotations

import argparse
from typing import Any

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
from verity.rollout.hf import HFEngine
from verity.types import SamplingParams

DEFAULT_NEW_TOKENS = {"quickstart": 12, "llama15m": 64}


def useful_tokens(rows: list[list[int]], eos: int) -> int:
    """Completion tokens up to and including the first ``eos`` of each row."""
    return sum(row.index(eos) + 1 if eos in row else len(row) for row in rows)


def generate_baseline(model: Any, tokenizer: Any, prompts: list[list[int]], group: int, new_tokens: int) -> int:
    """One ``model.generate`` call over every prompt repeated ``group`` times; returns useful tokens."""
    rows = [p for p in prompts for _ in range(group)]
    width = max(len(p) for p in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, p in enumerate(rows):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids.to(model.device),
            attention_mask=mask.to(model.device),
            do_sample=True,
            temperature=1.0,
            top_k=None,
            top_p=None,
            max_new_tokens=new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
    return useful_tokens(out[:, width:].tolist(), tokenizer.eos_token_id)


def engine_run(engine: HFEngine, prompts: list[list[int]], params: SamplingParams) -> int:
    return sum(len(c.token_ids) for group in engine.generate(prompts, params) for c in group)


def bench_model(
    name: str, prompts_n: int, group: int, new_tokens: int, repeats: int, peak: float, device: str = "cpu"
) -> None:
    model, tokenizer = load_model(name, device)
    prompts = bench_prompts(tokenizer, prompts_n)
    engine = HFEngine(model, tokenizer, batch_size=prompts_n * group)
    params = SamplingParams(new_tokens, temperature=1.0, n=group)
    t_engine, n_engine = best_of(lambda: engine_run(engine, prompts, params), repeats)
    t_gen, n_gen = best_of(lambda: generate_baseline(model, tokenizer, prompts, group, new_tokens), repeats)
    mean_prompt = sum(map(len, prompts)) / len(prompts)
    flops = flops_per_token(model, int(mean_prompt + new_tokens / 2))
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"model {name}: {params_m:.2f}M parameters, {flops / 1e6:.2f} MFLOPs/token (forward)")
    print(f"  batch {prompts_n} prompts x group {group}, prompts {mean_prompt:.1f} tokens, max {new_tokens} new")
    for label, seconds, tokens in (("verity engine", t_engine, n_engine), ("model.generate", t_gen, n_gen)):
        rate = tokens / seconds
        print(
            f"  {label:15s} {rate:9.0f} tokens/s  ({tokens} tokens in {seconds:.3f} s, "
            f"{rate * flops / peak:.1%} of matmul peak)"
        )
    print(f"  speed-up {n_engine / t_engine / (n_gen / t_gen):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, help="default: 12 (quickstart), 64 (llama15m)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the peak is measured on it too)")
    args = parser.parse_args()
    set_threads(args.threads)
    peak = matmul_peak(device=args.device)
    bf16 = matmul_peak(device=args.device, dtype=torch.bfloat16)
    print(
        f"{machine_note()}; matmul peak {peak / 1e9:.1f} GFLOP/s in float32, the precision both engines run in "
        f"(bfloat16: {bf16 / 1e9:.1f} GFLOP/s)"
    )
    for name in MODELS if args.model == "all" else (args.model,):
        new_tokens = args.max_new_tokens or DEFAULT_NEW_TOKENS[name]
        bench_model(name, args.prompts, args.group, new_tokens, args.repeats, peak, args.device)


if __name__ == "__main__":
    main()
