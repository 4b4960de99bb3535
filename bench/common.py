"""Shared pieces of the benchmarks: the two models, the prompts, a best-of timer, FLOP counts and the machine note.

Run every script from the repository root (``python3 bench/<script>.py``). The quickstart base model must be
built once with ``verity init examples/quickstart.yaml`` (``VERITY_CACHE`` picks the cache directory).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

from verity.build import held_out_keys
from verity.config import Config, load_config
from verity.data.prompts import encode_prompt
from verity.data.sources import build_source
from verity.model.loading import load_policy
from verity.run.base import base_cache_dir

QUICKSTART = "examples/quickstart.yaml"
MODELS = ("quickstart", "llama15m")
# Plain GRPO at lr 3e-4: the baseline the comparison benches measure against, and what TRL's GRPOTrainer runs. The
# quickstart's own recipe (pass@k advantages, docs/families.md) is what bench_families.py measures.
GRPO = ["algo.advantage=grpo", "train.lr=3e-4"]


def quickstart_config(overrides: list[str] | None = None) -> Config:
    """The quickstart's task, model and sizes, trained with plain GRPO (``GRPO``) unless ``overrides`` say else."""
    return load_config(QUICKSTART, [*GRPO, *(overrides or [])])


def quickstart_base(cfg: Config | None = None) -> Path:
    """Directory of the cached quickstart base model; a clear error when it has not been built yet."""
    cfg = cfg or quickstart_config()
    path = base_cache_dir(cfg, held_out_keys(cfg))
    if not (path / "config.json").is_file():
        raise SystemExit(f"no quickstart base model at {path}: run `verity init {QUICKSTART}` first")
    return path


def llama_15m(tokenizer: Any, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised ~15M-parameter Llama over the quickstart tokenizer (8 layers of width 384)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=384,
        num_hidden_layers=8,
        num_attention_heads=6,
        num_key_value_heads=6,
        intermediate_size=1152,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def load_model(name: str, device: str = "cpu") -> tuple[PreTrainedModel, Any]:
    """``quickstart`` (the cached base) or ``llama15m`` (random weights, same tokenizer), in float32."""
    model, tokenizer = load_policy(quickstart_base())
    if name == "llama15m":
        model = llama_15m(tokenizer)
    elif name != "quickstart":
        raise SystemExit(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return model.to(device).eval(), tokenizer


def model_dir(name: str) -> Path:
    """A Hugging Face directory holding model ``name`` and its tokenizer, for runs that load by path (the RL loop,
    TRL). The 15M model is saved once under ``$TMPDIR/verity-bench``."""
    if name == "quickstart":
        return quickstart_base()
    path = Path(os.environ.get("TMPDIR", "/tmp")) / "verity-bench" / name
    if not (path / "config.json").is_file():
        model, tokenizer = load_model(name)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return path


def bench_prompts(tokenizer: Any, count: int, offset: int = 0) -> list[list[int]]:
    """``count`` quickstart training prompts (chain_sum), tokenised as the RL loop does."""
    cfg = quickstart_config()
    source = build_source(cfg.data.tasks[0], cfg.seed, 1)
    return [encode_prompt(tokenizer, source.train_item(offset + i), None) for i in range(count)]


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Shortest wall time of ``repeats`` calls (after one untimed warm-up call) and the last result."""
    result = fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def matmul_peak(
    size: int = 1024, repeats: int = 20, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """Measured matmul FLOP/s on ``device`` (this process's threads on CPU): 2 n^3 FLOPs per n x n product, best
    of runs. On CUDA the products are larger and synchronised, and TF32 stays as torch sets it."""
    if device.startswith("cuda"):
        size = max(size, 8192)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)

    def product() -> torch.Tensor:
        out = torch.mm(a, b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    seconds, _ = best_of(product, repeats)
    return 2 * size**3 / seconds


def matmul_params(model: PreTrainedModel) -> int:
    """Weights that take part in a matmul per token: every 2-D weight except input-only embeddings (a tied
    embedding is counted once, as the output projection)."""
    embedding = model.get_input_embeddings().weight
    tied = embedding is model.get_output_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p.dim() == 2 and (tied or p is not embedding))


def flops_per_token(model: PreTrainedModel, context: int) -> float:
    """Forward FLOPs per token: 2 per matmul weight (Kaplan et al. 2020, C_forward ~ 2N) plus attention scores
    and values, 2 * 2 * layers * context * hidden. A training step (forward + backward) costs 3x this."""
    cfg = model.config
    return 2 * matmul_params(model) + 4 * cfg.num_hidden_layers * context * cfg.hidden_size


def machine_note() -> str:
    """Load average and thread count, so a reader can tell a busy machine from a slow engine."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"cpus={os.cpu_count()} torch_threads={torch.get_num_threads()} load_avg(1,5,15)={load}"


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
