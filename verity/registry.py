"""Naming pluggable parts: a ``Registry`` per kind (verifiers, environments, tools, engines, estimators, losses),
and ``import_object`` for a user's own ``package.module:function``. Configs name either; a wrong name says what
would have been right."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one kind. The modules that register the built-ins are imported on first lookup, so
    importing a registry stays cheap."""

    def __init__(self, kind: str, builtin_modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._builtin_modules = builtin_modules
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding an object under ``name``; a name is never silently taken over."""

        def add(obj: T) -> T:
            known = self._items.get(name)
            if known is not None and known is not obj:
                owner = f"{getattr(known, '__module__', '?')}.{getattr(known, '__qualname__', known)}"
                raise ValueError(f"{self.kind} name {name!r} is already registered by {owner}")
            self._items[name] = obj
            return obj

        return add

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
