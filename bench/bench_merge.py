"""Mix or merge (M2RL, in miniature): one RL run on a two-family mixture against two single-family RL runs of half
the steps each, merged (linear, task arithmetic, TIES, DARE, VaRM); held-out greedy accuracy per family.

Every run starts from the same tiny base, built once on the mixture (so both families share its tokenizer), and
the total number of RL steps is equal: ``--steps`` for the mixed run, ``--steps / 2`` for each single run. Run
from the repository root:

    python3 bench/bench_merge.py [--steps 120] [--families chain_sum,letter_counting] [--out /tmp/verity-merge]
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import Any

from common import GRPO, QUICKSTART

from verity.build import build_parts, build_tasks
from verity.config import Config, load_config
from verity.data.prompts import TaskPrompts
from verity.eval import evaluate
from verity.loop import train
from verity.model.loading import load_policy
from verity.model.merge import merge_models
from verity.rewards.executor import RewardExecutor
from verity.rollout.hf import HFEngine

CHAIN_SUM = {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1}
MERGES: dict[str, dict[str, Any]] = {
    "linear": {},
    "task_arithmetic": {"scale": 1.0},
    "ties": {"density": 0.5, "scale": 1.0},
    "dare": {"drop": 0.5, "combine": "ties", "density": 1.0},
    "varm": {},
}


def mixture(families: list[str], out: Path, name: str, model: str = "tiny", steps: int = 0) -> Config:
    tasks = [
        {"source": "reasoning_gym", "name": f, "kwargs": CHAIN_SUM if f == "chain_sum" else {}} for f in families
    ]
    return load_config(
        QUICKSTART,
        [
            *GRPO,
            f"name={name}",
            f"output_dir={out}",
            f"model.name={model}",
            f"data.tasks={tasks}",
            "rollout.max_new_tokens=12",
            f"train.steps={steps}",
            "eval.every=0",
            "runtime.threads=1",
            "tracking.quiet=true",
        ],
    )


def accuracy(cfg: Config, model_dir: str) -> dict[str, float]:
    """Held-out greedy accuracy per family of the model at ``model_dir`` on ``cfg``'s tasks."""
    _, items = build_tasks(cfg)
    model, tokenizer = load_policy(model_dir)
    engine = HFEngine(model, tokenizer, batch_size=256)
    encode = partial(TaskPrompts(cfg.data).encode, tokenizer)
    with RewardExecutor(cfg.reward) as executor:
        result = evaluate(engine, encode, items, executor.score, max_new_tokens=cfg.rollout.max_new_tokens, k=1)
    return {key.split("/")[1]: value for key, value in result.items() if key.startswith("task/")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120, help="RL steps of the mixed run (each single run: half)")
    parser.add_argument("--families", default="chain_sum,letter_counting")
    parser.add_argument("--out", default="/tmp/verity-merge")
    args = parser.parse_args()
    families, out = args.families.split(","), Path(args.out)
    both = mixture(families, out, "probe")
    parts = build_parts(both, print)  # builds (or reuses) the base on the mixture
    base = parts.model_path
    parts.runtime.close()
    rows: dict[str, dict[str, float]] = {"base": accuracy(both, base)}
    mixed = train(mixture(families, out, "mixed", base, args.steps), quiet=True)
    rows["mixed RL"] = accuracy(both, mixed["final_model"])
    singles = []
    for family in families:
        summary = train(mixture([family], out, f"only-{family}", base, args.steps // 2), quiet=True)
        singles.append(summary["final_model"])
        rows[f"only {family}"] = accuracy(both, summary["final_model"])
    for method, settings in MERGES.items():
        merged = merge_models(base, singles, out / f"merged-{method}", method, log=lambda m: None, **settings)
        rows[f"merged: {method}"] = accuracy(both, str(merged))
    print(f"\nheld-out greedy accuracy per family; {args.steps} RL steps in all for each arm; one torch thread")
    print(f"{'model':26s} " + " ".join(f"{f:>16s}" for f in families) + f" {'mean':>8s}")
    for name, acc in rows.items():
        values = [acc.get(f, 0.0) for f in families]
        cells = " ".join(f"{v:16.3f}" for v in values)
        print(f"{name:26s} {cells} {sum(values) / len(values):8.3f}")


if __name__ == "__main__":
    main()
