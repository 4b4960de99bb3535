"""Advantage estimators and policy losses by name (``algo.advantage``, ``algo.loss``) or by a user's import path
(``my_pkg.algo:my_estimator``).

Each declares the inputs it needs beyond the always-present ones, and the loop computes and passes exactly
those; nothing outside a registration branches on an algorithm's name.

- An estimator is ``fn(inputs: AdvantageInputs, cfg: AlgoConfig) -> Tensor``: advantages (N,) for a
  sequence-level estimator (spread over each completion's tokens) or (N, T) for a token-level one. Optional
  inputs it may declare: ``values`` (N, T) from a critic (the run then trains one), ``turns`` (multi-turn
  structure), ``tasks`` and ``item_ids`` (one key per sample).
- A policy loss is ``fn(inputs: LossInputs, cfg: AlgoConfig) -> (token_loss, clipped, log_ratio)``, each (B, T);
  aggregation, importance weights, KL and entropy terms are shared. It may declare ``prox_logprobs`` (the
  learner's own log-probs before the update) and ``sequence_advantage`` (it needs one advantage per sequence).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor

from verity.registry import Registry

# The config and the state are passed through, typed loosely here: ``verity.algo.config`` validates names against
# this registry, so importing it back would be a cycle.
AlgoConfig = Any

ESTIMATOR_INPUTS = frozenset({"values", "turns", "tasks", "item_ids"})
LOSS_INPUTS = frozenset({"prox_logprobs", "sequence_advantage"})


@dataclass(frozen=True)
class AdvantageInputs:
    """What an estimator reads. ``rewards`` (N,) are the shaped rewards; ``sequence_rewards`` (N,) subtract each
    completion's summed KL penalty and ``token_rewards`` (N, T) place the reward on the last completion token
    minus each token's KL penalty ``kl_penalty`` (both equal the plain rewards when the KL is not in the reward,
    and ``kl_penalty`` is then None). ``mask``
    (N, T) is 1 on trained completion tokens. Declared inputs are set; the rest are None."""

    rewards: Tensor
    sequence_rewards: Tensor
    token_rewards: Tensor
    group_ids: Tensor
    mask: Tensor
    kl_penalty: Tensor | None = None  # (N, T) per-token KL charge when the KL sits in the reward
    state: Any = None  # the run's AlgoState: running baseline, controlled coefficients
    values: Tensor | None = None
    turns: tuple[Tensor, Tensor, Tensor] | None = None
    tasks: Sequence[str] | None = None
    item_ids: Sequence[str] | None = None


@dataclass(frozen=True)
class LossInputs:
    """What a policy loss reads, all (B, T): the learner's log-probs (with gradient), the behaviour policy's,
    the anchor of the ratio (the proximal log-probs when present, else the behaviour ones), the advantages after
    shaping, and the mask of trained tokens."""

    logprobs: Tensor
    old_logprobs: Tensor
    anchor: Tensor
    advantages: Tensor
    mask: Tensor


@dataclass(frozen=True)
class Estimator:
    fn: Callable[[AdvantageInputs, AlgoConfig], Tensor]
    needs: frozenset[str]
    level: Literal["sequence", "token"]

    def __call__(self, inputs: AdvantageInputs, cfg: AlgoConfig) -> Tensor:
        return self.fn(inputs, cfg)


@dataclass(frozen=True)
class PolicyLoss:
    fn: Callable[[LossInputs, AlgoConfig], tuple[Tensor, Tensor, Tensor]]
    needs: frozenset[str]
    aggregation: str | None = None  # the algo.aggregation its objective requires, if any

    def __call__(self, inputs: LossInputs, cfg: AlgoConfig) -> tuple[Tensor, Tensor, Tensor]:
        return self.fn(inputs, cfg)


ESTIMATORS: Registry[Estimator] = Registry("advantage estimator", ("verity.algo.estimators",))
LOSSES: Registry[PolicyLoss] = Registry("policy loss", ("verity.algo.policy_losses",))


def _checked(needs: Sequence[str], known: frozenset[str], what: str) -> frozenset[str]:
    unknown = sorted(set(needs) - known)
    if unknown:
        raise ValueError(f"{what} declares unknown inputs {unknown}; known: {sorted(known)}")
    return frozenset(needs)


def advantage_estimator(
    name: str | None = None, *, needs: Sequence[str] = (), level: Literal["sequence", "token"] = "sequence"
) -> Callable[[Callable[..., Tensor]], Estimator]:
    """Decorator making ``fn`` an estimator; with a ``name`` it is also registered under it (a user's own
    estimator, named in the config by its import path, needs no name)."""

    def wrap(fn: Callable[..., Tensor]) -> Estimator:
        estimator = Estimator(fn, _checked(needs, ESTIMATOR_INPUTS, f"estimator {fn.__qualname__}"), level)
        return ESTIMATORS.register(name)(estimator) if name else estimator

    return wrap


def policy_loss_fn(
    name: str | None = None, *, needs: Sequence[str] = (), aggregation: str | None = None
) -> Callable[[Callable[..., tuple[Tensor, Tensor, Tensor]]], PolicyLoss]:
    """Decorator making ``fn`` a policy loss; with a ``name`` it is also registered under it. ``aggregation``
    names the ``algo.aggregation`` its objective requires (the config then defaults to it and refuses others)."""

    def wrap(fn: Callable[..., tuple[Tensor, Tensor, Tensor]]) -> PolicyLoss:
        loss = PolicyLoss(fn, _checked(needs, LOSS_INPUTS, f"policy loss {fn.__qualname__}"), aggregation)
        return LOSSES.register(name)(loss) if name else loss

    return wrap


def _typed(obj: Any, kind: type, spec: str, what: str) -> Any:
    if not isinstance(obj, kind):
        decorator = "advantage_estimator" if kind is Estimator else "policy_loss_fn"
        raise TypeError(
            f"{what} {spec!r} is a {type(obj).__name__}; decorate it with verity.algo.registry.{decorator}()"
        )
    return obj


def resolve_estimator(spec: str) -> Estimator:
    """The estimator for a registered name or an import path."""
    return _typed(ESTIMATORS.resolve(spec), Estimator, spec, "algo.advantage")


def resolve_loss(spec: str) -> PolicyLoss:
    """The policy loss for a registered name or an import path."""
    return _typed(LOSSES.resolve(spec), PolicyLoss, spec, "algo.loss")
