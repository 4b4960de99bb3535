"""What an advantage estimator and a policy loss are: their inputs, what they declare, and the decorators that
make a function one (``verity.algo.registry`` finds the built-ins by name; a user's own is named in the config by
its import path, ``my_pkg.algo:my_estimator``).

Each declares the inputs it needs beyond the always-present ones, and the loop computes and passes exactly
those; nothing outside a registration branches on an algorithm's name.

- An estimator is ``fn(inputs: AdvantageInputs, cfg: AlgoConfig) -> Tensor``: advantages (N,) for a
  sequence-level estimator (spread over each completion's tokens) or (N, T) for a token-level one. Optional
  inputs it may declare: ``values`` (N, T) from a critic (the run then trains one), ``turns`` (multi-turn
  structure), ``tasks`` and ``item_ids`` (one key per sample). Its registration also declares what the rest of
  the run needs to know of it: its traits (group-relative, the smallest useful group, whether it reads the shaped
  rewards, whether it keeps exploration alive), its own settings (keys of the ``algo:`` section that only it
  reads, a pydantic model), the checks it makes against the other sections of a run, and its own state (an
  object built per run and saved in checkpoints). ``verity.algo.pass_k`` is the example of all of them.
- A policy loss is ``fn(inputs: LossInputs, cfg: AlgoConfig) -> (token_loss, clipped, log_ratio)``, each (B, T);
  aggregation, importance weights, KL and entropy terms are shared. It may declare ``prox_logprobs`` (the
  learner's own log-probs before the update) and ``sequence_advantage`` (it needs one advantage per sequence).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel
from torch import Tensor

from verity.registry import registered_as

# The config and the run are passed through, typed loosely here: ``verity.algo.config`` validates names against
# this registry, so importing it back would be a cycle; the run's ``Config`` sits above the algorithm.
AlgoConfig = Any
RunConfig = Any

ESTIMATOR, LOSS = "advantage estimator", "policy loss"  # the registries' kinds
ESTIMATOR_INPUTS = frozenset({"values", "turns", "tasks", "item_ids"})
# The algo keys only some estimators read; one set to other than its default must be read by the run's estimator.
ESTIMATOR_KEYS = frozenset({"gamma", "gae_lambda", "gae_whiten", "correct_threshold"})
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
    settings: Any = None  # the estimator's own settings (its ``settings`` model), None if it declares none
    state: Any = None  # the estimator's own state for this run (its ``state`` factory), None if it keeps none
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


class EstimatorState(Protocol):
    """An estimator's state for one run: updated after every step with the step's metrics, saved in checkpoints.
    ``update`` returns metrics to log and warnings for the run (each reaction worth telling the user)."""

    def update(self, step: int, metrics: Mapping[str, float]) -> tuple[dict[str, float], list[str]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


# (settings, the run's Config) -> the run's state; (settings, the run's Config) -> errors naming the keys
StateFactory = Callable[[Any, RunConfig], EstimatorState]
RunCheck = Callable[[Any, RunConfig], list[str]]


@dataclass(frozen=True)
class Estimator:
    """A registered estimator and what it declares.

    - ``needs``, ``level``: its optional inputs, and whether it gives one advantage per sequence or per token.
    - ``group_relative``: its baseline is the other samples of the same prompt; ``min_group`` is the smallest
      group in which its advantages can be nonzero (a group of one learns nothing under GRPO).
    - ``shaped``: its advantages depend on the shaped rewards, so reward shaping (``algo.overlong_*``,
      ``long2short_coef``, ``repetition_coef``) reaches it; an estimator that reads only step values says False
      and the config refuses shaping beside it.
    - ``explores``: it keeps a group's other answers alive where a group-relative estimator collapses onto one
      (collapse warnings suggest it); ``remedy(settings)`` is its own suggestion when a run under it collapses.
    - ``settings``: a pydantic model of its own keys in the ``algo:`` section; ``check(settings, run)`` returns
      errors against the rest of the run's config; ``state(settings, run)`` builds its per-run state.
    - ``reads``: the shared ``algo:`` keys of ``ESTIMATOR_KEYS`` it reads (``gamma``, ``gae_lambda``, ...); the
      config refuses one of them set to other than its default beside an estimator that does not read it."""

    fn: Callable[[AdvantageInputs, AlgoConfig], Tensor]
    needs: frozenset[str]
    level: Literal["sequence", "token"]
    group_relative: bool = False
    min_group: int = 1
    shaped: bool = True
    explores: bool = False
    settings: type[BaseModel] | None = None
    check: RunCheck | None = None
    state: StateFactory | None = None
    remedy: Callable[[Any], str] | None = None
    reads: frozenset[str] = frozenset()

    def __call__(self, inputs: AdvantageInputs, cfg: AlgoConfig) -> Tensor:
        return self.fn(inputs, cfg)


@dataclass(frozen=True)
class PolicyLoss:
    fn: Callable[[LossInputs, AlgoConfig], tuple[Tensor, Tensor, Tensor]]
    needs: frozenset[str]
    aggregation: str | None = None  # the algo.aggregation its objective requires, if any

    def __call__(self, inputs: LossInputs, cfg: AlgoConfig) -> tuple[Tensor, Tensor, Tensor]:
        return self.fn(inputs, cfg)


def _checked(needs: Sequence[str], known: frozenset[str], what: str) -> frozenset[str]:
    unknown = sorted(set(needs) - known)
    if unknown:
        raise ValueError(f"{what} declares unknown inputs {unknown}; known: {sorted(known)}")
    return frozenset(needs)


def advantage_estimator(
    name: str | None = None,
    *,
    needs: Sequence[str] = (),
    level: Literal["sequence", "token"] = "sequence",
    group_relative: bool = False,
    min_group: int | None = None,
    shaped: bool = True,
    explores: bool = False,
    settings: type[BaseModel] | None = None,
    check: RunCheck | None = None,
    state: StateFactory | None = None,
    remedy: Callable[[Any], str] | None = None,
    reads: Sequence[str] = (),
) -> Callable[[Callable[..., Tensor]], Estimator]:
    """Decorator making ``fn`` an estimator with the traits, settings, checks and state ``Estimator`` describes;
    with a ``name`` it is also registered under it (a user's own estimator, named in the config by its import
    path, needs no name). ``min_group`` defaults to 2 for a group-relative estimator, else 1."""

    def wrap(fn: Callable[..., Tensor]) -> Estimator:
        estimator = Estimator(
            fn,
            _checked(needs, ESTIMATOR_INPUTS, f"estimator {fn.__qualname__}"),
            level,
            group_relative,
            min_group if min_group is not None else (2 if group_relative else 1),
            shaped,
            explores,
            settings,
            check,
            state,
            remedy,
            _checked(reads, ESTIMATOR_KEYS, f"estimator {fn.__qualname__}"),
        )
        return registered_as(ESTIMATOR, name)(estimator) if name else estimator

    return wrap


def policy_loss_fn(
    name: str | None = None, *, needs: Sequence[str] = (), aggregation: str | None = None
) -> Callable[[Callable[..., tuple[Tensor, Tensor, Tensor]]], PolicyLoss]:
    """Decorator making ``fn`` a policy loss; with a ``name`` it is also registered under it. ``aggregation``
    names the ``algo.aggregation`` its objective requires (the config then defaults to it and refuses others)."""

    def wrap(fn: Callable[..., tuple[Tensor, Tensor, Tensor]]) -> PolicyLoss:
        loss = PolicyLoss(fn, _checked(needs, LOSS_INPUTS, f"policy loss {fn.__qualname__}"), aggregation)
        return registered_as(LOSS, name)(loss) if name else loss

    return wrap
