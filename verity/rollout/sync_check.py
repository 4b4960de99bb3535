"""Verifying a weight sync: after an engine takes new weights, its teacher-forced log-probs of a fixed probe must
equal the learner's. An engine that keeps its own copy of the policy (vLLM, a Ray rollout worker) can silently go
on sampling from old weights (a sync that never arrived, weights lost over a sleep/wake cycle, a name that did not
map); its behaviour log-probs would then be wrong without any error. The check turns that into a named error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from verity.model.modeling import completion_logprobs
from verity.rollout.engine import Engine, Weights

PROBE_TEXT = "Verity checks that the rollout engine samples from the weights the learner has trained: 1 + 2 = 3"


class StaleWeightsError(RuntimeError):
    """The engine's log-probs of the probe differ from the learner's after a sync."""


class EngineSyncTimeout(TimeoutError):
    """The engine did not take new weights within its time limit."""


@dataclass(frozen=True)
class Probe:
    """Token rows teacher-forced through both sides: ``completions[i]`` scored after ``prompts[i]``."""

    prompts: list[list[int]]
    completions: list[list[int]]


def text_probe(tokenizer: Any, text: str = PROBE_TEXT) -> Probe:
    """A probe of one row: the first third of ``text``'s tokens as prompt, the rest scored."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) < 4:
        raise ValueError(f"the sync probe text encodes to {len(ids)} tokens; give one of at least 4")
    cut = len(ids) // 3
    return Probe([ids[:cut]], [ids[cut:]])


def learner_logprobs(model: nn.Module, probe: Probe, pad_id: int, temperature: float = 1.0) -> list[list[float]]:
    """The learner's teacher-forced log-probs of the probe (the reference the engine must reproduce)."""
    return completion_logprobs(model, probe.prompts, probe.completions, temperature, pad_id)


def compare_logprobs(
    engine_lp: list[list[float]], learner_lp: list[list[float]], tolerance: float, version: int
) -> float:
    """Largest absolute difference between the two sides' log-probs; above ``tolerance`` it is a
    ``StaleWeightsError`` naming the version and the setting."""
    worst = max(
        (abs(a - b) for ea, la in zip(engine_lp, learner_lp, strict=True) for a, b in zip(ea, la, strict=True)),
        default=0.0,
    )
    if worst > tolerance:
        raise StaleWeightsError(
            f"after the weight sync to version {version} the engine's log-probs of the probe differ from the "
            f"learner's by up to {worst:.3g} (tolerance {tolerance:g}, rollout.sync_tolerance): the engine "
            "is not sampling from the learner's weights (a sync that did not arrive, weights lost over a "
            "sleep/wake cycle, or parameter names that did not map). Raise the tolerance only if the two sides "
            "run different precisions (bf16 engine, fp32 learner)."
        )
    return worst


def verify_sync(
    engine: Engine, model: nn.Module, probe: Probe, tolerance: float, temperature: float = 1.0
) -> float:
    """Check an in-process engine against the learner's ``model``: the largest log-prob difference on ``probe``
    (raises ``StaleWeightsError`` above ``tolerance``). A runtime whose engine lives elsewhere calls
    ``engine.logprobs`` remotely, then ``compare_logprobs`` with ``learner_logprobs``."""
    pad_id = engine.tokenizer.pad_token_id if engine.tokenizer.pad_token_id is not None else 0
    reference = learner_logprobs(model, probe, pad_id, temperature)
    observed = engine.logprobs(probe.prompts, probe.completions, temperature)
    return compare_logprobs(observed, reference, tolerance, engine.version)


@dataclass(frozen=True)
class SyncCheck:
    """What verifies one sync: the probe, the learner's log-probs of it at the new version, the tolerance."""

    probe: Probe
    reference: list[list[float]]
    tolerance: float


def synced(engine: Engine, weights: Weights, version: int, check: SyncCheck | None) -> float | None:
    """Give ``engine`` the weights of ``version``; an engine with its own copy is then verified against ``check``
    (``StaleWeightsError`` beyond its tolerance). Returns the largest difference, or None when nothing was checked
    (an engine on the learner's own module)."""
    engine.load_weights(weights, version)
    if engine.shared or check is None:
        return None
    observed = engine.logprobs(check.probe.prompts, check.probe.completions, 1.0)
    return compare_logprobs(observed, check.reference, check.tolerance, version)
