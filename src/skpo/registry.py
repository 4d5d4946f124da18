"""A small name → plug-in registry shared by advantage estimators, policy losses and rollout kinds.

A plug-in is a function, the frozen dataclass of its hyper-parameters, and metadata: what the
trainer needs to know about it (is an estimator group-relative, and grouped by what? does it
read the value tracker's baseline, Monte Carlo step values, token weights? which row roles does
a rollout kind produce?). Looking a name up returns all three, so configuration can be
validated (unknown keys, wrong types, a missing input) before any tensor is touched, and the
trainer reads the metadata instead of comparing names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Generic, TypeVar

from skpo.errors import did_you_mean

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class NoParams:
    """Parameter record for plug-ins that take no hyper-parameters."""


@dataclass(frozen=True)
class Entry(Generic[F]):
    name: str
    fn: F
    params_cls: type
    meta: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    def make_params(self, values: dict[str, Any] | None = None) -> Any:
        """Build the parameter record; unknown keys are an error that names them."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(self.params_cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"{self.name}: unknown parameter(s) {unknown}; known: {sorted(known)}"
            )
        return self.params_cls(**values)


class Registry(Generic[F]):
    """Maps names to plug-ins. Registering a second function under a taken name is an error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[F]] = {}

    def register(self, name: str, params_cls: type = NoParams, **meta: Any) -> Callable[[F], F]:
        """Decorator: register ``fn`` under ``name`` with its parameter dataclass and metadata
        (keyword arguments; each registry documents the keys it knows)."""

        def decorator(fn: F) -> F:
            existing = self._entries.get(name)
            if existing is not None and existing.fn is not fn:
                raise ValueError(f"{self.kind} {name!r} is already registered to {existing.fn.__qualname__}")
            self._entries[name] = Entry(name, fn, params_cls, MappingProxyType(dict(meta)))
            return fn

        return decorator

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plug-in registered for a while: tests, notebooks)."""
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {sorted(self._entries)}")
        del self._entries[name]

    def get(self, name: str) -> Entry[F]:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}{did_you_mean(str(name), self._entries)}; registered: {sorted(self._entries)}; to add your own, "
                           "register it in a module and load it with --import MODULE or the config's plugins: [MODULE] "
                           "(docs/methods.md)") from None

    def entry_and_params(self, name: str, values: Mapping[str, Any], key: str,
                         error: type[Exception] = ValueError) -> tuple[Entry[F], Any]:
        """Look ``name`` up and build its parameter record from ``values``; either failure is
        one ``error`` naming the config key (``key``, or ``{key}_params`` for the parameters)."""
        try:
            entry = self.get(name)
        except KeyError as err:
            raise error(f"{key}: {err.args[0]}") from None
        try:
            return entry, entry.make_params(dict(values))
        except (TypeError, ValueError) as err:
            raise error(f"{key}_params: {err}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
