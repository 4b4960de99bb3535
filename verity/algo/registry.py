"""Advantage estimators and policy losses by name (``algo.advantage``, ``algo.loss``) or by a user's import path
(``my_pkg.algo:my_estimator``): the built-ins are the ones their modules mark with the decorators of
``verity.algo.contract``."""

from __future__ import annotations

from typing import Any

from verity.algo.contract import ESTIMATOR, LOSS, Estimator, PolicyLoss
from verity.registry import Registry

ESTIMATORS: Registry[Estimator] = Registry(
    ESTIMATOR,
    ("verity.algo.estimators", "verity.algo.pass_k", "verity.algo.single_rollout", "verity.algo.w_reinforce"),
)
LOSSES: Registry[PolicyLoss] = Registry(LOSS, ("verity.algo.policy_losses",))


def _typed(obj: Any, kind: type, spec: str, what: str) -> Any:
    if not isinstance(obj, kind):
        decorator = "advantage_estimator" if kind is Estimator else "policy_loss_fn"
        raise TypeError(
            f"{what} {spec!r} is a {type(obj).__name__}; decorate it with verity.algo.contract.{decorator}()"
        )
    return obj


def resolve_estimator(spec: str) -> Estimator:
    """The estimator for a registered name or an import path."""
    return _typed(ESTIMATORS.resolve(spec), Estimator, spec, "algo.advantage")


def resolve_loss(spec: str) -> PolicyLoss:
    """The policy loss for a registered name or an import path."""
    return _typed(LOSSES.resolve(spec), PolicyLoss, spec, "algo.loss")
