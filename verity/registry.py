"""Naming pluggable parts: a ``Registry`` per kind (verifiers, environments, tools, engines, workflows,
estimators, losses, runtimes), and ``import_object`` for a user's own ``package.module:function``. Configs name
either; a wrong name says what would have been right.

A built-in registers itself where it is defined, with its seam's decorator (``registered_as(kind, name)`` under
another name); its registry imports the built-in modules on first lookup. So a built-in's module needs only the
seam's contract, never the registry that lists it, and no import points back up into a registry."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


_TABLE: dict[str, dict[str, Any]] = {}  # kind -> name -> object: every registration, whoever made it


def registered_as(kind: str, name: str) -> Callable[[T], T]:
    """Decorator registering ``obj`` as the ``kind`` called ``name``; a name is never silently taken over. A
    seam's own decorators (``register_engine``, ``advantage_estimator``, ...) are this with their kind, so the
    module that defines a built-in imports only its seam's contract, and a user's module may register its own
    names the same way."""

    def add(obj: T) -> T:
        known = _TABLE.setdefault(kind, {}).get(name)
        if known is not None and known is not obj:
            owner = f"{getattr(known, '__module__', '?')}.{getattr(known, '__qualname__', known)}"
            raise ValueError(f"{kind} name {name!r} is already registered by {owner}")
        _TABLE[kind][name] = obj
        return obj

    return add


class Registry(Generic[T]):
    """Named objects of one kind: the names registered with ``registered_as(kind, ...)``. The built-in modules
    (whose import registers the built-ins) are imported on first lookup, so importing a registry stays cheap."""

    def __init__(self, kind: str, builtin_modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._builtin_modules = builtin_modules
        self._items: dict[str, T] = _TABLE.setdefault(kind, {})

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding an object under ``name``."""
        return registered_as(self.kind, name)

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._items

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name is a ``KeyError`` listing the closest names."""
        self._load_builtins()
        if name in self._items:
            return self._items[name]
        close = difflib.get_close_matches(name, self._items, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"unknown {self.kind} {name!r}.{hint} Registered: {', '.join(sorted(self._items))}.")

    def resolve(self, spec: str) -> T:
        """The object for a registered name or a user's import path (``package.module:name``)."""
        if ":" in spec:
            return import_object(spec, self.kind)  # type: ignore[return-value]
        try:
            return self.get(spec)
        except KeyError as err:
            raise KeyError(
                f"{err.args[0]} A user {self.kind} is named by its import path, 'package.module:function'."
            ) from None

    def _load_builtins(self) -> None:
        for module in self._builtin_modules:
            importlib.import_module(module)


def import_object(spec: str, what: str) -> Callable[..., Any]:
    """The callable at ``package.module:function``. Errors say which part failed: a malformed path
    (``ValueError``), a module that does not import (``ImportError``), a missing name with the closest ones
    (``AttributeError``), or something that is not callable (``TypeError``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} {spec!r} is not an import path of the form 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"{what} {spec!r}: cannot import module {module_name!r}: {exc}") from exc
    obj = getattr(module, attr, None)
    if obj is None:
        public = [name for name in vars(module) if not name.startswith("_")]
        close = difflib.get_close_matches(attr, public, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise AttributeError(f"{what} {spec!r}: module {module_name!r} has no callable {attr!r}.{hint}")
    if not callable(obj):
        raise TypeError(f"{what} {spec!r}: {attr!r} is a {type(obj).__name__}, not a function")
    return obj


def validated(resolve: Callable[[str], object], spec: str) -> str:
    """``spec`` when ``resolve`` accepts it (a registered name or a working import path); a failed lookup becomes
    the ``ValueError`` a config field reports, with the lookup's own message."""
    try:
        resolve(spec)
    except (KeyError, ImportError, AttributeError, TypeError) as err:
        raise ValueError(err.args[0] if err.args else str(err)) from None
    return spec
