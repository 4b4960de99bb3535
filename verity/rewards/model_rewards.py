"""Model-based verifiers: a reward model, a generative judge and a generative process reward model (PRM).

Each is batched (``register_verifier(..., batched=True)``): a reward worker hands it ``reward.batch_size``
completions per call and it runs one forward (or one ``generate``) over them. The model is loaded once per worker
process, on first use, and kept (``load_model``); ``device`` places it and ``timeout_s`` bounds one call (the
reward model checks it between chunks of ``max_batch``, after the first; the judges pass it to
``generate(max_time=...)``, whose cut-short outputs then fail strict parsing). Settings come from
``reward.verifiers[i].settings`` in the config.

- ``reward_model``: ``AutoModelForSequenceClassification`` over ``template`` (prompt and completion); the
  reward is the logit of a one-label head, or the softmax probability of ``positive_label``.
- ``judge``: a causal LM asked ``template``; its output must end with exactly one ``Verdict: <label>`` line.
- ``prm_judge``: a generative PRM shown the numbered steps; its first output line must hold one mark per step
  (``+`` right, ``-`` wrong), which become ``Score.steps``. Completions breaking the format constraints
  (``verity.rewards.judging.format_violation``) score 0 on every step without asking the model.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

from verity.rewards.judging import format_violation, numbered_steps, parse_step_verdicts, parse_verdict
from verity.rewards.steps import Aggregate, aggregate_steps, split_steps
from verity.rewards.verifier import register_verifier
from verity.types import Score

_PRELOAD = ("torch", "transformers")
DEFAULT_RM_TEMPLATE = "{prompt}\n{completion}"
DEFAULT_JUDGE_TEMPLATE = (
    "Question: {prompt}\nAnswer: {completion}\nIs the answer correct? End with 'Verdict: CORRECT' or "
    "'Verdict: INCORRECT'.\n"
)
DEFAULT_PRM_TEMPLATE = "{prompt}\n{steps}\nVerdicts:"
Fields = list[dict[str, Any]]


@functools.cache
def load_model(kind: str, path: str, device: str, dtype: str = "float32") -> tuple[Any, Any]:
    """``(model, tokenizer)`` of ``kind`` 'causal' or 'classifier' from ``path``, in eval mode on ``device``;
    loaded once per process (later calls return the same objects). The tokenizer pads on the left."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    auto = AutoModelForCausalLM if kind == "causal" else AutoModelForSequenceClassification
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    model = auto.from_pretrained(path, dtype=dtypes[dtype]).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def fill(template: str, completion: str, fields: dict[str, Any], separator: str = "\n") -> str:
    """``template`` with ``{prompt}``, ``{completion}``, ``{answer}`` and ``{steps}`` (numbered) filled in."""
    return template.format(
        prompt=fields.get("prompt", ""),
        completion=completion,
        answer=fields.get("answer", ""),
        steps=numbered_steps(completion, separator),
    )


@register_verifier("reward_model", preload=_PRELOAD, batched=True)
def reward_model(
    completions: list[str],
    fields: Fields,
    *,
    model: str,
    template: str = DEFAULT_RM_TEMPLATE,
    positive_label: int = 1,
    max_length: int = 512,
    max_batch: int = 16,
    device: str = "cpu",
    dtype: str = "float32",
    timeout_s: float = 20.0,
) -> list[float | Score]:
    """Scores of a sequence-classification reward model (see the module docstring)."""
    import torch

    net, tokenizer = load_model("classifier", model, device, dtype)
    texts = [fill(template, c, f) for c, f in zip(completions, fields, strict=True)]
    start, out = time.monotonic(), []
    for i in range(0, len(texts), max_batch):
        if i > 0 and time.monotonic() - start > timeout_s:
            return [*out, *[Score(0.0, reason=f"timeout after {timeout_s:g}s (reward model)")] * (len(texts) - i)]
        chunk = texts[i : i + max_batch]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        enc = enc.to(device)
        with torch.no_grad():
            logits = net(**enc).logits.float()  # (B, labels)
        if logits.shape[-1] == 1:
            out.extend(logits[:, 0].tolist())
        else:
            out.extend(logits.softmax(-1)[:, positive_label].tolist())
    return out


def generate(
    model: str, prompts: list[str], max_new_tokens: int, device: str, dtype: str, timeout_s: float
) -> list[str]:
    """Greedy continuations of ``prompts`` by the causal LM at ``model``, stopped after ``timeout_s``."""
    import torch

    net, tokenizer = load_model("causal", model, device, dtype)
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    with torch.no_grad():
        tokens = net.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            max_time=timeout_s,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return tokenizer.batch_decode(tokens[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


@register_verifier("judge", preload=_PRELOAD, batched=True)
def judge(
    completions: list[str],
    fields: Fields,
    *,
    model: str,
    template: str = DEFAULT_JUDGE_TEMPLATE,
    labels: dict[str, float] | None = None,
    verdict_prefix: str = "Verdict:",
    max_new_tokens: int = 64,
    device: str = "cpu",
    dtype: str = "float32",
    timeout_s: float = 20.0,
) -> list[Score]:
    """A generative judge's verdicts, parsed strictly (see ``verity.rewards.judging.parse_verdict``)."""
    labels = labels if labels is not None else {"CORRECT": 1.0, "INCORRECT": 0.0}
    prompts = [fill(template, c, f) for c, f in zip(completions, fields, strict=True)]
    outputs = generate(model, prompts, max_new_tokens, device, dtype, timeout_s)
    scores = []
    for output in outputs:
        value = parse_verdict(output, labels, verdict_prefix)
        reason = None if value is not None else f"judge gave no strict verdict: {output[-80:]!r}"
        scores.append(Score(value or 0.0, reason=reason))
    return scores


@register_verifier("prm_judge", preload=_PRELOAD, batched=True)
def prm_judge(
    completions: list[str],
    fields: Fields,
    *,
    model: str,
    template: str = DEFAULT_PRM_TEMPLATE,
    separator: str = "\n",
    marks: Sequence[str] = ("+", "-"),
    aggregate: Aggregate = "min",
    answer_pattern: str = r"<answer>.*?</answer>",
    max_steps: int = 32,
    min_steps: int = 1,
    step_pattern: str | None = None,
    max_new_tokens: int = 64,
    device: str = "cpu",
    dtype: str = "float32",
    timeout_s: float = 20.0,
) -> list[Score]:
    """Step scores from a generative PRM, behind the format constraints (see the module docstring)."""
    spans = [split_steps(c, separator) for c in completions]
    asked = [
        i
        for i, c in enumerate(completions)
        if spans[i] and format_violation(c, separator, answer_pattern, max_steps, min_steps, step_pattern) is None
    ]
    prompts = [fill(template, completions[i], fields[i], separator) for i in asked]
    generated = generate(model, prompts, max_new_tokens, device, dtype, timeout_s) if asked else []
    outputs = dict(zip(asked, generated, strict=True))
    scores = []
    for i in range(len(completions)):
        zeros = tuple((end, 0.0) for _, end in spans[i])
        if i not in outputs:  # broke the format constraints: the policy's fault, not a verifier failure
            scores.append(Score(0.0, steps=zeros))
            continue
        values = parse_step_verdicts(outputs[i], len(spans[i]), (marks[0], marks[1]))
        if values is None:
            scores.append(Score(0.0, reason=f"PRM gave no strict step verdicts: {outputs[i][:80]!r}", steps=zeros))
            continue
        steps = tuple((end, v) for (_, end), v in zip(spans[i], values, strict=True))
        scores.append(Score(aggregate_steps(values, aggregate), steps=steps))
    return scores
