"""One resolution of a command's config, for every command that takes one (train, eval, init, spark): dotted
overrides anywhere among the arguments, data paths found beside the config file (in the YAML or as overrides),
the config's directory importable, the device checked and the thread count set. So the same config gives the
same base and the same behaviour whichever command runs it."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from verity.config import Config


def split_overrides(config: str | None, rest: Sequence[str]) -> tuple[str | None, list[str]]:
    """``(config file, overrides)`` from a command's positional arguments: a first argument that is an override
    (``key=value``, not a YAML file name) means there is no config file."""
    if config and "=" in config and not config.endswith((".yaml", ".yml")):
        return None, [config, *rest]
    return config, list(rest)


def resolve_config(
    config: str | None,
    overrides: Sequence[str],
    small_model: Callable[[Config], bool] | None = None,
    *,
    writes_run_dir: bool = False,
) -> Config:
    """The command's config: loaded with its overrides, its directory importable, the device checked, and the
    threads set (``runtime.threads``, else one thread on CPU for a small model: by default the built-in base).
    A command that ``writes_run_dir`` is refused first, before the slow imports, when another process holds it."""
    from verity.config import load_config
    from verity.run.lock import lock_holder, locked_message
    from verity.schema import ConfigError

    cfg = load_config(config, list(overrides))
    if writes_run_dir and (holder := lock_holder(cfg.run_dir)) is not None:
        raise ConfigError(locked_message(cfg.run_dir, holder))
    from verity.run.base import BUILTINS
    from verity.run.checks import check_device, resolve_threads

    add_import_paths(Path(config).parent if config else None)
    check_device(cfg.runtime.device)
    if cfg.model.name not in BUILTINS:
        from verity.model.loading import check_hub_model

        check_hub_model(cfg.model.name, cfg.model.hub_timeout_s)
    resolve_threads(cfg, small_model(cfg) if small_model is not None else cfg.model.name in BUILTINS)
    return cfg


def add_import_paths(config_dir: Path | None) -> None:
    """Put the current directory and the config file's directory on the import path (``sys.path`` and, for
    worker processes, ``PYTHONPATH``), so a config can name ``my_rewards:score`` kept beside it."""
    dirs = [str(Path.cwd()), *([str(config_dir.resolve())] if config_dir is not None else [])]
    for directory in reversed(dirs):
        if directory not in sys.path:
            sys.path.insert(0, directory)
    known = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(d for d in [*dirs, *known] if d))
