"""Environments by name: a built-in (``calculator``, ``guessing``; marked ``register_env`` in its module) or an
import path ``package.module:Factory``. A factory is called with ``env.settings`` as keywords, once per episode."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

from verity.data.sources import resolve_callable
from verity.envs.base import ENV, Env
from verity.registry import Registry
from verity.schema import ConfigError

EnvFactory = Callable[..., Env]
_ENVS: Registry[EnvFactory] = Registry(ENV, ("verity.envs.calculator", "verity.envs.guessing"))


def env_names() -> list[str]:
    return _ENVS.names()


def env_factory(
    spec: str, settings: dict[str, Any], key: str = "env", defaults: dict[str, Any] | None = None
) -> Callable[[], Env]:
    """A no-argument maker of fresh environments. ``defaults`` fill keywords the factory takes and ``settings``
    do not give. A bad name or bad settings is a ``ConfigError`` naming ``key``; one environment is built here
    so that settings errors surface before the run starts."""

    if ":" in spec:
        factory = resolve_callable(spec, f"{key}.name")
    elif spec in _ENVS:
        factory = _ENVS.get(spec)
    else:
        raise ConfigError(
            f"{key}.name: unknown environment {spec!r}; built-in: {_ENVS.names()}, or give an "
            "import path 'package.module:Factory'"
        )
    accepted = inspect.signature(factory).parameters
    settings = {**{k: v for k, v in (defaults or {}).items() if k in accepted}, **settings}
    make = partial(factory, **settings)
    try:
        inspect.signature(factory).bind(**settings)
        env = make()
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key}.settings: cannot build environment {spec!r} with {settings}: {err}") from None
    missing = [m for m in ("reset", "step") if not callable(getattr(env, m, None))]
    if missing:
        raise ConfigError(f"{key}.name: {spec!r} builds {type(env).__name__}, which lacks {', '.join(missing)}()")
    return make
