"""User plug-ins: modules that register estimators, losses, rollout kinds, prompt samplers or
rewards before a run resolves its method.

``skpo train --import my_plugins`` (repeatable), the config key ``plugins: [my_plugins,
path/to/more.py]``, or, from Python, a plain ``import``. A name is a module on ``sys.path`` (the
working directory comes first, as with ``python -m``) or a ``.py`` file. Each is imported once
per process; one that fails to import (a syntax error, an exception at import time) is a
one-line :class:`PluginError` naming it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from skpo.errors import UserError

__all__ = ["PluginError", "import_plugin", "import_plugins"]

_IMPORTED: dict[str, ModuleType] = {}

HOW_TO_REGISTER = ("register yours in a module (e.g. @ADVANTAGE_ESTIMATORS.register('name') from skpo.algorithms) and "
                   "load it with --import MODULE or the config's plugins: [MODULE] (docs/methods.md)")


class PluginError(UserError):
    """A plug-in module that cannot be imported."""


def import_plugin(ref: str, what: str = "plugin") -> ModuleType:
    """Import the plug-in ``ref`` (a module name or a ``.py`` file), once; errors say ``what`` it is."""
    ref = str(ref).strip()
    if ref in _IMPORTED:
        return _IMPORTED[ref]
    try:
        if ref.endswith(".py") or "/" in ref or os.sep in ref:
            path = Path(ref).expanduser()
            if not path.is_file():
                raise PluginError(f"{what} {ref!r}: file {str(path)!r} does not exist")
            name = f"skpo_plugin_{path.stem}_{abs(hash(str(path.resolve())))}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise PluginError(f"{what} {ref!r}: cannot import {str(path)!r}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(ref)
    except PluginError:
        raise
    except SyntaxError as err:
        raise PluginError(f"{what} {ref!r}: syntax error at {err.filename}:{err.lineno}: {err.msg}") from err
    except BaseException as err:  # noqa: BLE001 - whatever the module raised while importing, SystemExit included
        if isinstance(err, KeyboardInterrupt):
            raise
        raise PluginError(f"{what} {ref!r} failed to import: {type(err).__name__}: {err}") from err
    _IMPORTED[ref] = module
    return module


def import_plugins(refs) -> list[ModuleType]:
    return [import_plugin(ref) for ref in refs or ()]
