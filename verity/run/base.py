"""Building Verity's offline tiny base model.

The tiny base is a Llama-architecture decoder over a byte-level BPE tokenizer trained on the tasks' text, warmed
up by SFT on demonstrations of the run's tasks and stopped while it is only partly competent (the "warm up before
RL" stage), so RL has room to improve it. It is saved with ``save_pretrained`` and cached under a key of every
setting that shapes it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedModel

from verity.config import Config
from verity.data.images import item_key
from verity.data.prompts import encode_prompt
from verity.data.samplers import held_out_message
from verity.data.sources import TaskSource
from verity.eval import Scorer, evaluate
from verity.model.tiny_vl import build_tiny_vl
from verity.model.tokenizer import build_bpe_tokenizer
from verity.rollout.engine import EngineSpec
from verity.rollout.registry import build_engine
from verity.run.held_out import check_held_out, check_items, held_out_digest, write_warmup_questions
from verity.schema import ConfigError
from verity.train.sft import demonstration_batch, sft_loss
from verity.types import Item, SamplingParams

BUILTIN = "tiny"
BUILTIN_VL = "tiny-vl"  # the tiny base with a vision tower (verity.model.tiny_vl)
BUILTINS = (BUILTIN, BUILTIN_VL)
MAX_HELD_OUT_RUN = 10_000  # held-out prompts in a row after which a source cannot give training items
FORMAT_VERSION = 2  # bump when the builder changes what it produces
Log = Callable[[str], None]


def demonstration(item: Item) -> str:
    """The completion a warm-up demonstration teaches: the item's own ``demonstration`` when it has one, else
    the answer in answer tags."""
    return "".join(text for text, _ in demonstration_segments(item))


def demonstration_segments(item: Item) -> list[tuple[str, bool]]:
    """The demonstration as ``(text, trained)`` segments. An item's ``demonstration`` may be a string or, for a
    multi-turn episode, a list of ``[text, trained]`` pairs whose untrained parts are environment output (tool
    results, feedback): the warm-up reads them in context but is not taught to write them."""
    demo = item.meta.get("demonstration")
    if isinstance(demo, str):
        return [(demo, True)]
    if isinstance(demo, list):
        return [(str(text), bool(trained)) for text, trained in demo]
    return [(f"<answer>{item.answer}</answer>", True)]


def base_cache_dir(cfg: Config, held_out: Collection[str]) -> Path:
    """Where the tiny base for ``cfg`` is cached: a key of every setting that shapes it, the run's held-out
    questions (``held_out``, their ``item_key``s: ``verity.build.held_out_keys``) among them."""
    root = cfg.model.cache_dir or os.environ.get("VERITY_CACHE") or Path.home() / ".cache" / "verity"
    shaping = {
        "format": FORMAT_VERSION,
        "tiny": cfg.model.tiny.model_dump(),
        "warmup": cfg.model.warmup.model_dump(),
        "tasks": [t.model_dump(include={"source", "name", "path", "function", "kwargs"}) for t in cfg.data.tasks],
        "system_prompt": cfg.data.system_prompt,
        "seed": cfg.seed,
        "held_out": held_out_digest(held_out),
    }
    if cfg.model.name == BUILTIN_VL:  # only then: the text base's cache keys stay as they were
        shaping["vision"] = cfg.model.tiny_vision.model_dump()
    key = hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:16]
    prefix = BUILTIN_VL if cfg.model.name == BUILTIN_VL else BUILTIN
    return Path(root) / "models" / f"{prefix}-{key}"


def ensure_tiny_base(cfg: Config, sources: list[TaskSource], held_out: set[str], scorer: Scorer, log: Log) -> Path:
    """The cached tiny base for ``cfg``, building it first when missing (built aside, then renamed in place)."""
    target = base_cache_dir(cfg, held_out)
    if (target / "config.json").is_file():
        log(f"reusing cached base model {target}")
        check_held_out(target, held_out)
        return target
    start = time.time()
    log(f"building tiny base model into {target}")
    with build_threads():
        torch.manual_seed(cfg.seed)
        tiny = cfg.model.tiny
        corpus = [text for s in sources for i in range(2000) for text in _texts(s.train_item(3_000_000 + i))]
        tokenizer = build_bpe_tokenizer(corpus, tiny.vocab_size)
        processor = None
        if cfg.model.name == BUILTIN_VL:
            model, processor = build_tiny_vl(cfg.model, tokenizer)
        else:
            model = LlamaForCausalLM(tiny.decoder_config(tokenizer))
        info, trained = _warm_up(cfg, model, tokenizer, sources, held_out, scorer, log, processor)
    return _save_base(target, model, processor or tokenizer, info, trained, start, log)


@contextmanager
def build_threads() -> Iterator[None]:
    """One torch thread while the base is built, whatever the caller set: torch may split a matrix product's sums
    by thread count, which would make the base depend on the machine's cores. (Measured on a 2-core CPU, 1 and 2
    threads gave equal weights at the tiny sizes anyway; a CPU with other kernels may still round differently.)"""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _save_base(
    target: Path,
    model: PreTrainedModel,
    saver: Any,
    info: dict[str, Any],
    trained: set[str],
    start: float,
    log: Log,
) -> Path:
    """Save a built base and its tokenizer or processor (``saver``) aside, check it, and rename it in place."""
    info["build_seconds"] = round(time.time() - start, 1)
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging)
        saver.save_pretrained(staging)
        (staging / "verity_base.json").write_text(json.dumps(info, indent=2))
        write_warmup_questions(staging, trained)
        _check_round_trip(staging)
        if not target.exists():
            os.replace(staging, target)
    finally:  # also on Ctrl-C or a full disk: no half-built model is left behind
        shutil.rmtree(staging, ignore_errors=True)
    log(f"built base model in {info['build_seconds']} s (warm-up accuracy {info['warmup_accuracy']:.2f})")
    return target


def _texts(item: Item) -> tuple[str, str]:
    return item.prompt, demonstration(item)


def _warm_up(
    cfg: Config,
    model: PreTrainedModel,
    tokenizer: Any,
    sources: list[TaskSource],
    held_out: set[str],
    scorer: Scorer,
    log: Log,
    processor: Any = None,
) -> tuple[dict[str, Any], set[str]]:
    """SFT on demonstrations until greedy accuracy on check items reaches the target and beats the majority-answer
    baseline by ``min_gain_over_majority``, or until its samples stop differing (then it goes back to the last
    check whose samples still differed: a base that answers one answer leaves RL nothing to compare), or
    max_steps. Returns what the build reports (``verity_base.json``) and the questions it trained on. Check items,
    demonstrations and held-out items are three disjoint sets of questions."""
    warm = cfg.model.warmup
    system = cfg.data.system_prompt

    def encode(item: Item) -> list[int]:
        return encode_prompt(tokenizer, item, system, processor=processor)

    check = check_items(sources, held_out, warm.check_items, log)
    baseline = majority_baseline(sources, check)
    target = max(warm.stop_at_accuracy, baseline + warm.min_gain_over_majority)
    stream = _fresh_items(sources, held_out | {item_key(it) for it in check}, start=2_000_000)
    # The check reads the model being warmed up: the transformers engine, sharing its module.
    engine = build_engine("hf", EngineSpec("", tokenizer, seed=cfg.seed, model=model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=warm.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20))
    accuracy, diversity, step, trained = 0.0, 1.0, 0, set()
    kept: tuple[int, float, float, dict[str, torch.Tensor]] | None = None  # the last check still diverse
    for step in range(1, warm.max_steps + 1):
        items = [next(stream) for _ in range(warm.batch_size)]
        trained.update(item_key(it) for it in items)
        prompts = [encode(it) for it in items]
        targets, masks = zip(*(_demonstration_tokens(tokenizer, it) for it in items), strict=True)
        batch = demonstration_batch(prompts, list(targets), tokenizer.pad_token_id)
        for row, (prompt, mask) in enumerate(zip(prompts, masks, strict=True)):
            batch.loss_mask[row, len(prompt) : len(prompt) + len(mask)] = torch.tensor(mask, dtype=torch.float32)
        model.train()
        loss = sft_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % warm.check_every == 0:
            accuracy = evaluate(engine, encode, check, scorer, max_new_tokens=cfg.rollout.max_new_tokens)[
                "accuracy"
            ]
            diversity = sample_diversity(engine, [encode(it) for it in check[:16]], cfg.rollout.max_new_tokens)
            log(
                f"warm-up step {step}: loss {loss.item():.3f}, check accuracy {accuracy:.2f}, distinct samples "
                f"{diversity:.2f}"
            )
            if diversity < warm.min_diversity:
                if kept is not None:
                    step, accuracy, diversity, weights = kept
                    model.load_state_dict(weights)
                    log(f"warm-up: samples stopped differing; keeping the base of step {step}")
                break
            kept = (step, accuracy, diversity, {k: v.detach().clone() for k, v in model.state_dict().items()})
            if accuracy >= target:
                break
    info = {
        "warmup_steps": step,
        "warmup_accuracy": accuracy,
        "stop_at_accuracy": warm.stop_at_accuracy,
        "majority_baseline": baseline,
        "competent": accuracy >= baseline + warm.min_gain_over_majority,
        "check_items": len(check),
        "distinct_samples": diversity,
        "min_diversity": warm.min_diversity,
        "diverse": diversity >= warm.min_diversity,
    }
    for warning in base_warnings(info):
        log(f"warning: {warning}")
    return info, trained


def sample_diversity(engine: Any, prompts: list[list[int]], max_new_tokens: int, n: int = 4) -> float:
    """How much ``n`` samples at temperature 1 differ, averaged over ``prompts``: (distinct completions - 1) /
    (n - 1), 0 when every prompt gets one completion, 1 when all differ."""
    groups = engine.generate(prompts, SamplingParams(max_new_tokens, temperature=1.0, n=n))
    shares = [(len({tuple(c.token_ids) for c in group}) - 1) / (n - 1) for group in groups]
    return sum(shares) / max(len(shares), 1)


def majority_baseline(sources: list[TaskSource], check: list[Item], sample: int = 1000) -> float:
    """Accuracy on ``check`` of always giving each task's most frequent answer among ``sample`` training items:
    the score a model gets without solving anything (high for tasks whose answers are mostly one value)."""
    top = {}
    for source in sources:
        answers = Counter(str(source.train_item(4_000_000 + i).answer) for i in range(sample))
        top[source.name] = answers.most_common(1)[0][0]
    return sum(str(item.answer) == top.get(item.task) for item in check) / max(len(check), 1)


def base_warnings(info: dict[str, Any] | Path | str) -> list[str]:
    """What a run should be told about its base: from the warm-up's ``info``, or a model directory's
    ``verity_base.json`` (none for a model Verity did not build)."""
    if not isinstance(info, dict):
        path = Path(info) / "verity_base.json"
        info = json.loads(path.read_text()) if path.is_file() else {}
    warnings = []
    if not info.get("diverse", True):
        warnings.append(
            f"the tiny base samples one answer: distinct samples {info['distinct_samples']:.2f} at temperature "
            f"1 on its check prompts (model.warmup.min_diversity={info['min_diversity']:.2f}; check accuracy "
            f"{info['warmup_accuracy']:.2f} after {info['warmup_steps']} warm-up steps), so RL groups carry no "
            "reward differences to learn from. Lower model.warmup.max_steps or model.warmup.lr, or give the task "
            "more distinct questions"
        )
    if not info.get("competent", True):
        warnings.append(
            "the tiny base is no better than always giving the most frequent answer (check accuracy "
            f"{info['warmup_accuracy']:.2f} against {info['majority_baseline']:.2f} for the majority answer, "
            f"after {info['warmup_steps']} warm-up steps): RL would only sharpen that guess. Raise "
            "model.warmup.max_steps, "
            "or give the task more varied answers"
        )
    return warnings


def _fresh_items(sources: list[TaskSource], held_out: set[str], start: int) -> Iterator[Item]:
    """Training items of every source in turn, from index ``start``, skipping held-out prompts; a source whose
    items are held out ``MAX_HELD_OUT_RUN`` times in a row is an error (its prompts repeat)."""
    misses = [0] * len(sources)
    for i in itertools.count(start):
        for k, source in enumerate(sources):
            item = source.train_item(i)
            if item_key(item) in held_out:
                misses[k] += 1
                if misses[k] >= MAX_HELD_OUT_RUN:
                    raise ConfigError(held_out_message(source.name, MAX_HELD_OUT_RUN))
                continue
            misses[k] = 0
            yield item


def _demonstration_tokens(tokenizer: Any, item: Item) -> tuple[list[int], list[int]]:
    """Token ids of the demonstration plus end-of-sequence, and its loss mask (0 on environment segments)."""
    ids: list[int] = []
    mask: list[int] = []
    for text, trained in demonstration_segments(item):
        tokens = tokenizer.encode(text, add_special_tokens=False)
        ids += tokens
        mask += [int(trained)] * len(tokens)
    return [*ids, tokenizer.eos_token_id], [*mask, 1]


def _check_round_trip(path: Path) -> None:
    """A reloaded tokenizer must give back text exactly (some auto classes silently drop whitespace)."""
    tok = AutoTokenizer.from_pretrained(path)
    sample = "State  the answer:\n 12 - 7 = <answer>5</answer>"
    back = tok.decode(tok.encode(sample, add_special_tokens=False))
    if back != sample:
        raise RuntimeError(f"tokenizer saved at {path} does not round-trip text: {sample!r} -> {back!r}")
