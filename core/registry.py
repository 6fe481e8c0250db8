"""One small registry class shared by every kind of plug-in.

Search spaces, controllers, evaluators and hardware profiles each keep one `Registry`; entries are added with its
`register` decorator, listed with `names()` and fetched with `get()`. A plug-in class with an ``Options`` model
(spaces, controllers, evaluators) is made by `create(name, options, ...)`, the one factory of every such kind,
after `options(name, raw)` validated its options. An unknown name raises `ValueError` listing the valid names, so
recipe validation and the CLI can pass the message straight to the user.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class PluginOptions(BaseModel):
    """Base of every plug-in's recipe options (`space.options`, `controller.options`, ...): typed, frozen, and
    unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Registry(Generic[T]):
    """Name -> entry mapping for one kind of plug-in.

    Args:
        kind: human name of the kind ("search space", "controller", ...), used in messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that records `entry` under `name` (warns when it replaces an earlier entry)."""

        def deco(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                warnings.warn(f"{self.kind} {name!r} registered twice; the later one wins", stacklevel=2)
            self._entries[name] = entry
            return entry

        return deco

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._entries)

    def get(self, name: str) -> T:
        """Entry registered under `name`.

        Raises:
            ValueError: `name` is unknown; the message lists the valid names.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; expected one of: {', '.join(self.names()) or '(none registered)'}"
            ) from None

    def options(self, name: str, options: Mapping[str, Any] | PluginOptions | None = None) -> PluginOptions:
        """The typed options of plug-in `name`: `options` itself when already validated by its ``Options`` class.

        Raises:
            ValueError: `name` is unknown; pydantic's `ValidationError` (a `ValueError`): bad options.
        """
        cls = self.get(name).Options
        if isinstance(options, cls):
            return options
        return cls(**dict(options or {}))

    def create(self, name: str, options: Mapping[str, Any] | PluginOptions | None = None, *args: Any,
               **kwargs: Any) -> Any:
        """An instance of plug-in `name`: ``cls(*args, options=<typed options>, **kwargs)``.

        Raises:
            ValueError: an unknown name or bad options (see `options`).
        """
        return self.get(name)(*args, options=self.options(name, options), **kwargs)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
