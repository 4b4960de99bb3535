"""End to end against Hugging Face TRL: optimizer steps per second of TRL's GRPOTrainer and of Verity's loop on
the same model, prompts, group size, lengths and verifier (use_vllm=False, one optimizer step per batch of
8 prompts x 8 completions, 12 new tokens, no KL term, temperature 1), at the same precision (float32: Verity's
only precision on CPU; TRL's default ``bf16=True`` would run emulated bf16 on a CPU without bf16 units, or 2x
faster matmuls on one with them) and the same recomputation (``--recompute`` turns activation checkpointing on for
both; TRL's default is on, Verity's off). The settings of each side are printed beside the ratio.

TRL lives in its own virtual environment so it cannot change Verity's packages:

    python3 -m venv --system-site-packages /tmp/trlenv
    /tmp/trlenv/bin/pip install trl torch==2.13.0 transformers==5.19.0   # pins keep the system torch
    /tmp/trlenv/bin/python -m bench.bench_trl --model quickstart --steps 10 --threads 1

Run under that interpreter, it times TRL and then Verity (same process, same threads).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from typing import Any

import torch

from bench.bench_step import GROUP, NEW_TOKENS, PROMPTS, run_loop, summarize
from bench.common import MODELS, machine_note, model_dir, quickstart_config, set_threads
from verity.data.sources import build_source
from verity.rewards.executor import RewardExecutor

SETUP = __doc__.split("TRL lives", 1)[1]


def trl_steps_per_second(model: str, steps: int, recompute: bool) -> float:
    """Wall time per optimizer step of GRPOTrainer, between the end of its first and its last step."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    cfg = quickstart_config()
    source = build_source(cfg.data.tasks[0], cfg.seed, 1)
    items = [source.train_item(i) for i in range(PROMPTS * (steps + 1))]
    executor = RewardExecutor(cfg.reward)

    def reward(completions: list[str], index: list[int], **_: Any) -> list[float]:
        return [s.value for s in executor.score([items[i] for i in index], completions)]

    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            stamps.append(time.perf_counter())

    dataset = Dataset.from_dict({"prompt": [it.prompt for it in items], "index": list(range(len(items)))})
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            output_dir=out,
            max_steps=steps,
            per_device_train_batch_size=PROMPTS * GROUP,
            num_generations=GROUP,
            max_completion_length=NEW_TOKENS,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            beta=0.0,
            learning_rate=3e-4,
            use_vllm=False,
            use_cpu=True,
            bf16=False,
            fp16=False,
            gradient_checkpointing=recompute,
            logging_steps=steps,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        trainer = GRPOTrainer(
            model=str(model_dir(model)), reward_funcs=reward, args=args, train_dataset=dataset, callbacks=[Clock()]
        )
        trainer.train()
    executor.close()
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=MODELS, default="quickstart")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating TRL/Verity rounds; best of each")
    parser.add_argument(
        "--recompute", action="store_true", help="activation checkpointing on both sides (default: off on both)"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="dotted config overrides for Verity's run, e.g. train.skip_zero_advantage=false",
    )
    args = parser.parse_args()
    if importlib.util.find_spec("trl") is None:
        print(f"trl is not importable from {sys.executable}; set it up in its own environment:{SETUP}")
        raise SystemExit(1)
    set_threads(args.threads)
    overrides = [*args.overrides, f"train.gradient_checkpointing={str(args.recompute).lower()}"]
    settings = (
        f"TRL: bf16=False, fp16=False, gradient_checkpointing={args.recompute}; "
        f"Verity: float32, train.gradient_checkpointing={str(args.recompute).lower()}"
    )
    print(f"{machine_note()}; torch {torch.__version__}")
    print(f"settings: {settings}")
    # Load on a shared machine drifts: alternate the two and keep each one's best round.
    trl_rate = verity_rate = 0.0
    for _ in range(args.rounds):
        trl_rate = max(trl_rate, trl_steps_per_second(args.model, args.steps, args.recompute))
        print(f"TRL GRPOTrainer: {trl_rate:.3f} optimizer steps/s ({1 / trl_rate:.3f} s/step), best so far")
        verity_rate = max(
            verity_rate, summarize(args.model, run_loop(args.model, args.steps, args.threads, overrides))
        )
    print(f"best of {args.rounds}: Verity {verity_rate:.3f}, TRL {trl_rate:.3f} optimizer steps/s")
    print(f"Verity / TRL: {verity_rate / trl_rate:.2f}x optimizer steps/s ({settings})")


if __name__ == "__main__":
    main()
