"""SPARK's three stages on a run config (Rahman et al., arXiv:2512.03244; our reading, see docs/model-rewards.md).

1. The generator (the config's policy) samples ``solutions`` answers to each of ``prompts`` training problems;
   each answer is verified ``verifications`` times and the step verdicts are aggregated by majority.
2. A generative PRM, initialised from the generator, is fine-tuned to write one mark per step (``+`` right,
   ``-`` wrong) for a prompt showing the problem and the numbered steps (the ``prm_judge`` format), on the
   aggregated labels. Its step-level F1 is measured on solutions to held-out problems against the exact labels.
3. RL with the PRM as the reward (``prm_judge`` + ``grpo_process``) is compared with plain GRPO on the exact
   outcome reward, each for the same wall time (``train.time_limit_s``), by exact held-out accuracy.

The exact step labels come from the config's reward, which must be a process verifier returning 0/1 step
scores (``sum_steps`` for the running-sum task). The stand-in for a verifier LLM is described in
``verity.recipes.spark.labels``.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from verity.build import tasks_and_base
from verity.config import Config
from verity.data.prompts import TaskPrompts
from verity.model.loading import load_policy
from verity.recipes.spark.labels import majority_steps, noisy_verdicts, step_f1
from verity.recipes.spark.orm import orm_accuracy, orm_text, train_orm
from verity.rewards.executor import RewardExecutor
from verity.rewards.judging import parse_step_verdicts
from verity.rewards.model_rewards import DEFAULT_PRM_TEMPLATE, fill, generate, reward_model
from verity.rollout.engine import Engine, EngineSpec
from verity.rollout.registry import build_engine
from verity.train.sft import demonstration_batch, sft_loss
from verity.types import Item, SamplingParams

Log = Callable[[str], None]
Solution = tuple[Item, str, list[bool]]  # the problem, the sampled text, the exact step labels


@dataclass(frozen=True)
class SparkOptions:
    """Sizes of the pipeline (``verity spark --help`` documents each)."""

    prompts: int = 96
    solutions: int = 8
    verifications: int = 5
    noise: float = 0.3
    eval_prompts: int = 48
    prm_steps: int = 400
    prm_lr: float = 2e-3
    prm_batch: int = 32
    rl_seconds: float = 0.0
    arms: tuple[str, ...] = ("grpo", "spark")
    prm_labels: tuple[str, ...] = ("majority", "single", "exact")
    prm_settings: dict[str, Any] = field(default_factory=dict)  # extra prm_judge settings in the RL arms
    orm_steps: int = 300  # 0: no outcome reward model


def sample_solutions(
    cfg: Config, engine: Engine, encode: Callable[[Item], list[int]], items: list[Item], n: int
) -> list[Solution]:
    """``n`` sampled answers per item with their exact step labels (answers without steps are left out)."""
    params = SamplingParams(cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature, n=n)
    with RewardExecutor(cfg.reward.model_copy(update={"in_process": True})) as exact:
        out: list[Solution] = []
        for start in range(0, len(items), 32):
            chunk = items[start : start + 32]
            groups = engine.generate([encode(it) for it in chunk], params)
            texts = [(it, c.text) for it, group in zip(chunk, groups, strict=True) for c in group]
            scores = exact.score([it for it, _ in texts], [t for _, t in texts])
            out.extend((it, t, [v >= 0.5 for _, v in s.steps]) for (it, t), s in zip(texts, scores, strict=True))
    if not any(labels for _, _, labels in out):
        raise ValueError("reward.verifiers: the exact checker returned no step scores; use a process verifier")
    return [s for s in out if s[2]]


def prm_example(tokenizer: Any, item: Item, text: str, labels: list[bool]) -> tuple[list[int], list[int]]:
    """The PRM's prompt and target token ids for one labelled solution (the ``prm_judge`` format)."""
    prompt = fill(DEFAULT_PRM_TEMPLATE, text, {"prompt": item.prompt})
    target = " " + " ".join("+" if ok else "-" for ok in labels) + "\n"
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return ids, [*tokenizer(target, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]


def train_prm(
    generator: torch.nn.Module,
    tokenizer: Any,
    examples: list[tuple[list[int], list[int]]],
    opts: SparkOptions,
    out: Path,
    log: Log,
) -> Path:
    """Fine-tune a copy of the generator on ``examples`` (SFT on the target tokens) and save it to ``out``."""
    model = copy.deepcopy(generator).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.prm_lr)
    rng = random.Random(0)
    for step in range(1, opts.prm_steps + 1):
        batch = rng.sample(examples, min(opts.prm_batch, len(examples)))
        loss = sft_loss(
            model, demonstration_batch([p for p, _ in batch], [t for _, t in batch], tokenizer.pad_token_id)
        )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0:
            log(f"PRM step {step}: loss {loss.item():.3f}")
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def prm_predictions(prm_dir: Path, solutions: list[Solution], max_new_tokens: int) -> list[list[bool] | None]:
    """The PRM's step verdicts for each solution (None where its output does not parse strictly)."""
    out: list[list[bool] | None] = []
    for start in range(0, len(solutions), 64):
        chunk = solutions[start : start + 64]
        prompts = [fill(DEFAULT_PRM_TEMPLATE, t, {"prompt": it.prompt}) for it, t, _ in chunk]
        texts = generate(str(prm_dir), prompts, max_new_tokens, "cpu", "float32", 600.0)
        for (_, _, labels), text in zip(chunk, texts, strict=True):
            values = parse_step_verdicts(text, len(labels))
            out.append(None if values is None else [v == 1.0 for v in values])
    return out


def label_stage(solutions: list[Solution], opts: SparkOptions, seed: int) -> tuple[dict[str, list], dict]:
    """Step labels per solution by source (``majority`` of ``verifications``, ``single`` verification, ``exact``),
    and how each scores against the exact ones."""
    rng = random.Random(seed)
    exact = [labels for _, _, labels in solutions]
    votes = [[noisy_verdicts(e, opts.noise, rng) for _ in range(opts.verifications)] for e in exact]
    sources = {"majority": [majority_steps(v) for v in votes], "single": [v[0] for v in votes], "exact": exact}
    share = sum(not ok for e in exact for ok in e) / max(1, sum(len(e) for e in exact))
    report = {name: step_f1(labels, exact) for name, labels in sources.items() if name != "exact"}
    report["wrong_step_share"] = share
    return sources, report


def outcome_model(
    base: str,
    tokenizer: Any,
    solutions: list[Solution],
    votes: list[list[bool]],
    held_out: list[Solution],
    opts: SparkOptions,
    out: Path,
) -> tuple[Path, dict[str, float]]:
    """Train the ORM on voted outcomes; its accuracy on the held-out solutions' exact outcomes."""
    examples = [(orm_text(it, text), all(v)) for (it, text, _), v in zip(solutions, votes, strict=True)]
    orm_dir = train_orm(base, tokenizer, examples, opts.orm_steps, opts.prm_lr, out / "orm_majority")
    scores = reward_model([t for _, t, _ in held_out], [{"prompt": it.prompt} for it, _, _ in held_out],
                          model=str(orm_dir))  # fmt: skip
    truth = [all(lab) for _, _, lab in held_out]
    report = {"accuracy": orm_accuracy(scores, truth), "right_share": sum(truth) / len(truth)}
    return orm_dir, report


def run_spark(cfg: Config, opts: SparkOptions, out: Path, log: Log = print) -> dict[str, Any]:
    """Stages 1-2 and the PRM's F1 (and, with ``opts.rl_seconds``, stage 3's comparison); written to
    ``out/spark.json``."""
    out.mkdir(parents=True, exist_ok=True)
    with RewardExecutor(cfg.reward) as executor:  # the base verity train would build (or reuse) for cfg
        sources, eval_items, base = tasks_and_base(cfg, executor.score, log)
    generator, tokenizer = load_policy(base)
    # The config's engine samples the solutions (the transformers one shares the generator's module).
    engine = build_engine(
        cfg.rollout.engine,
        EngineSpec(base, tokenizer, seed=cfg.seed, batch_size=64, settings=cfg.rollout, model=generator),
    )
    encode = partial(TaskPrompts(cfg.data).encode, tokenizer)
    started = time.time()
    train_items = [sources[i % len(sources)].train_item(i) for i in range(opts.prompts)]
    solutions = sample_solutions(cfg, engine, encode, train_items, opts.solutions)
    labels, label_report = label_stage(solutions, opts, cfg.seed)
    log(f"stage 1: {len(solutions)} solutions, majority-vote label F1 {label_report['majority']['f1']:.3f}")
    held_out = sample_solutions(cfg, engine, encode, eval_items[: opts.eval_prompts], opts.solutions)
    engine.close()
    truth = [lab for _, _, lab in held_out]
    max_marks = 2 * max(len(lab) for lab in truth) + 2
    prms: dict[str, Any] = {"all_wrong_baseline": step_f1([[False] * len(t) for t in truth], truth)}
    for source in opts.prm_labels:
        examples = [
            prm_example(tokenizer, it, t, lab) for (it, t, _), lab in zip(solutions, labels[source], strict=True)
        ]
        prm_dir = train_prm(generator, tokenizer, examples, opts, out / f"prm_{source}", log)
        prms[source] = step_f1(prm_predictions(prm_dir, held_out, max_marks), truth)
        log(f"stage 2: PRM on {source} labels, step F1 {prms[source]['f1']:.3f} on {len(held_out)} solutions")
    prm_dir = out / f"prm_{opts.prm_labels[0]}"
    orm_dir, orm_report = None, None
    if opts.orm_steps > 0:
        orm_dir, orm_report = outcome_model(base, tokenizer, solutions, labels["majority"], held_out, opts, out)
        log(f"stage 2: ORM on voted outcomes, held-out accuracy {orm_report['accuracy']:.3f}")
    result: dict[str, Any] = {
        "options": asdict(opts),
        "base_model": base,
        "prm_model": str(prm_dir),
        "labels": label_report,
        "prm_held_out": prms,
        "orm_held_out": orm_report,
        "held_out_solutions": len(held_out),
        "stage_1_2_seconds": round(time.time() - started, 1),
    }
    if opts.rl_seconds > 0:
        from verity.recipes.spark.compare import compare_arms

        result["rl"] = compare_arms(cfg, base, prm_dir, orm_dir, opts, out, log)
    (out / "spark.json").write_text(json.dumps(result, indent=2))
    return result
