"""A small name → plug-in registry shared by advantage estimators, policy losses and rollout kinds.

A plug-in is a function, the frozen dataclass of its hyper-parameters, and metadata: what the
trainer needs to know about it (is an estimator group-relative, and grouped by what? does it
read the value tracker's baseline, Monte Carlo step values, token weights? which row roles does
a rollout kind produce?). Looking a name up returns all three, so configuration can be
validated (unknown keys, wrong types, a missing input) before any tensor is touched, and the
trainer reads the metadata instead of comparing names.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

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

    def make_params(self, values: Mapping[str, Any] | None = None) -> Any:
        """Build the parameter record; unknown keys are an error that names them."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(self.params_cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"{self.name}: unknown parameter(s) {unknown}; known: {sorted(known)}"
            )
        check_types(self.params_cls, values, self.name)
        return self.params_cls(**values)


def check_types(cls: type, values: Mapping[str, Any], where: str) -> None:
    """Each of ``values`` against the annotation of the dataclass field it sets (``bool``,
    ``int``, ``float`` — an int is a float —, ``str``, ``Literal``, ``X | None``, tuples and
    lists of those, mappings); ``ValueError`` naming the key and the value. Annotations of other
    kinds are not checked."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve is not checked
        return
    for key, value in values.items():
        hint = hints.get(key)
        if hint is not None and not _fits(value, hint):
            raise ValueError(f"{where}: {key} must be {_described(hint)} (got {value!r})")


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is type(None):
        return value is None
    if hint in (bool, int, float, str):
        if isinstance(value, bool):
            return hint is bool
        return isinstance(value, hint) or (hint is float and isinstance(value, int))
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
        return not args or all(_fits(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping) or hint in (dict, collections.abc.Mapping):
        return isinstance(value, Mapping)
    return True


def _described(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_described(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if hint is type(None):
        return "null"
    if isinstance(hint, type) and origin is None:
        return {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}.get(
            hint.__name__, hint.__name__)
    return f"a {getattr(origin, '__name__', str(origin))}"


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
