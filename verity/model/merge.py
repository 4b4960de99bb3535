"""Merging models that share a base: linear averaging, task arithmetic, TIES, DARE and FuseChat's VaRM.

Each method is a pure function over one parameter's tensors: the base's ``base`` and the fine-tuned models'
``tensors`` (same shape), whose task vectors are ``tau_i = tensors[i] - base``. ``merge_state_dicts`` applies one
to every parameter; ``merge_models`` reads model directories (full models or LoRA adapters, merged into their base
first) and writes a Hugging Face model that ``from_pretrained`` loads. ``verity merge`` is the command.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

Method = Literal["linear", "task_arithmetic", "ties", "dare", "varm"]
METHODS: tuple[str, ...] = ("linear", "task_arithmetic", "ties", "dare", "varm")
# The settings each method reads (merge.json records these alone); DARE's TIES step keeps every entry (density 1).
SETTINGS: dict[str, tuple[str, ...]] = {
    "linear": ("weights",),
    "task_arithmetic": ("scale",),
    "ties": ("scale", "density"),
    "dare": ("scale", "drop", "combine", "seed"),
    "varm": (),
}


def _normalized(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n or sum(weights) <= 0 or any(w < 0 for w in weights):
        raise ValueError(
            f"merge weights must be {n} non-negative numbers with a positive sum, got {list(weights)}"
        )
    total = float(sum(weights))
    return [w / total for w in weights]


def linear(tensors: Sequence[Tensor], weights: Sequence[float] | None = None) -> Tensor:
    """Weighted average ``sum_i w_i theta_i`` with the weights normalised to sum 1 (model soups, Wortsman et al.
    2022); equal weights by default."""
    w = _normalized(weights, len(tensors))
    return sum(wi * t.float() for wi, t in zip(w, tensors, strict=True)).to(tensors[0].dtype)  # type: ignore[union-attr]


def task_arithmetic(base: Tensor, tensors: Sequence[Tensor], scale: float = 1.0) -> Tensor:
    """Task arithmetic (Ilharco et al. 2023, arXiv:2212.04089): ``theta_0 + lambda sum_i tau_i``."""
    delta = sum(t.float() - base.float() for t in tensors)
    return (base.float() + scale * delta).to(base.dtype)


def trim(delta: Tensor, density: float) -> Tensor:
    """Keep the ``density`` share of entries with the largest magnitude, zero the rest (TIES's first step). Per
    tensor; ties at the threshold are kept."""
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if density == 1 or delta.numel() == 0:
        return delta
    keep = max(1, round(density * delta.numel()))
    threshold = delta.abs().flatten().kthvalue(delta.numel() - keep + 1).values
    return torch.where(delta.abs() >= threshold, delta, torch.zeros_like(delta))


def ties(base: Tensor, tensors: Sequence[Tensor], density: float = 0.2, scale: float = 1.0) -> Tensor:
    """TIES-Merging (Yadav et al. 2023, arXiv:2306.01708): trim each task vector to its top-``density`` entries,
    elect each entry's sign as the sign of the trimmed vectors' sum, and average only the entries that agree with
    it (disjoint mean); ``theta_0 + lambda tau_merged``. Our reading trims per parameter tensor."""
    trimmed = torch.stack([trim(t.float() - base.float(), density) for t in tensors])  # (K, ...)
    sign = torch.sign(trimmed.sum(0))
    agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
    count = agree.sum(0).clamp(min=1)
    merged = (trimmed * agree).sum(0) / count
    return (base.float() + scale * merged).to(base.dtype)


def dare(delta: Tensor, drop: float, generator: torch.Generator) -> Tensor:
    """DARE (Yu et al. 2024, arXiv:2311.03099): drop each entry of a task vector with probability ``drop`` and
    rescale the survivors by ``1 / (1 - drop)``, which keeps the vector's expectation."""
    if not 0 <= drop < 1:
        raise ValueError(f"drop must be in [0, 1), got {drop}")
    keep = torch.rand(delta.shape, generator=generator) >= drop
    return torch.where(keep, delta / (1 - drop), torch.zeros_like(delta))


def varm_weights(base: Tensor, tensors: Sequence[Tensor]) -> list[float]:
    """FuseChat's VaRM (Wan et al. 2024, arXiv:2402.16107): matrix m of model j gets weight
    ``E_m[dtheta_jm^2] / sum_j E_m[dtheta_jm^2]``, its share of the squared change fine-tuning made; equal weights
    when no model changed the matrix."""
    changes = [float((t.float() - base.float()).pow(2).mean()) for t in tensors]
    total = sum(changes)
    return [c / total for c in changes] if total > 0 else [1.0 / len(tensors)] * len(tensors)


def merge_tensor(
    base: Tensor,
    tensors: Sequence[Tensor],
    method: str,
    *,
    weights: Sequence[float] | None = None,
    scale: float = 1.0,
    density: float = 0.2,
    drop: float = 0.9,
    combine: Literal["task_arithmetic", "ties"] = "task_arithmetic",
    generator: torch.Generator | None = None,
) -> Tensor:
    """One parameter merged by ``method`` (see the functions above for each setting's meaning)."""
    if method == "linear":
        return linear(tensors, weights)
    if method == "task_arithmetic":
        return task_arithmetic(base, tensors, scale)
    if method == "ties":
        return ties(base, tensors, density, scale)
    if method == "varm":
        return linear(tensors, varm_weights(base, tensors))
    if method == "dare":
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        sparse = [base.float() + dare(t.float() - base.float(), drop, gen) for t in tensors]
        merged = ties(base, sparse, 1.0, scale) if combine == "ties" else task_arithmetic(base, sparse, scale)
        return merged.to(base.dtype)
    raise ValueError(f"unknown merge method {method!r}; choose one of {', '.join(METHODS)}")


def merge_state_dicts(
    base: dict[str, Tensor], models: Sequence[dict[str, Tensor]], method: str, seed: int = 0, **settings: Any
) -> dict[str, Tensor]:
    """Every floating-point parameter of ``base`` merged from ``models``; other entries are copied from the base.
    A parameter missing from a model, or of another shape, is an error naming it."""
    if len(models) < 2 and method not in ("task_arithmetic", "dare"):
        raise ValueError(f"merge method {method!r} needs at least two models, got {len(models)}")
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for name, tensor in base.items():
        found = [m.get(name) for m in models]
        for i, t in enumerate(found):
            if t is None or t.shape != tensor.shape:
                got = "missing" if t is None else f"shape {tuple(t.shape)}"
                raise ValueError(f"model {i}: parameter {name!r} is {got}; the base has {tuple(tensor.shape)}")
        if not tensor.is_floating_point():
            out[name] = tensor.clone()
            continue
        out[name] = merge_tensor(tensor, found, method, generator=generator, **settings)  # type: ignore[arg-type]
    return out


def load_state(path: str | Path, base_path: str | Path) -> dict[str, Tensor]:
    """A model directory's weights; a LoRA adapter directory (``adapter_config.json``) is merged into the base
    first, so adapters trained from one base merge like full models."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
        return PeftModel.from_pretrained(base, path).merge_and_unload().state_dict()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: neither a model directory (config.json) nor a LoRA adapter")
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict()


def merge_models(
    base_path: str | Path,
    paths: Sequence[str | Path],
    out: str | Path,
    method: str,
    log: Callable[[str], None] = print,
    **settings: Any,
) -> Path:
    """Merge the models at ``paths`` (fine-tuned from ``base_path``) into ``out``, with the base's config and
    tokenizer, and a ``merge.json`` recording how it was made."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    states = [load_state(p, base_path) for p in paths]
    log(f"merging {len(states)} models by {method}")
    merged = merge_state_dicts(model.state_dict(), states, method, **settings)
    model.load_state_dict(merged)
    out = Path(out)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_path).save_pretrained(out)
    used = {key: value for key, value in settings.items() if key in SETTINGS.get(method, ())}
    record = {"method": method, "base": str(base_path), "models": [str(p) for p in paths], **used}
    (out / "merge.json").write_text(json.dumps(record, indent=2))
    return out
