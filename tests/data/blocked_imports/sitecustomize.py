"""Put this folder on ``PYTHONPATH`` to run Python as if the packages named in
``SKPO_BLOCKED_IMPORTS`` (comma-separated top-level names, e.g. ``rich,vllm``) were not installed:
importing one of them, or any module under it, raises ``ModuleNotFoundError`` as a missing
package does, and ``importlib.util.find_spec`` answers ``None``. Used by
``tests/test_gpu_check_script.py`` to run the GPU check as on a bare GPU image. Python imports
``sitecustomize`` at start-up (``site``), so every child process that inherits the variables is
blocked too."""

from __future__ import annotations

import importlib.util
import os
import sys
from importlib.abc import MetaPathFinder

BLOCKED = frozenset(name.strip() for name in os.environ.get("SKPO_BLOCKED_IMPORTS", "").split(",") if name.strip())


def _blocked(fullname: str) -> bool:
    return fullname in BLOCKED or any(fullname.startswith(name + ".") for name in BLOCKED)


class _Blocked(MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if _blocked(fullname):
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked: not on this image)", name=fullname)
        return None


def _find_spec(name, package=None, _real=importlib.util.find_spec):
    """``importlib.util.find_spec`` answers ``None`` for a missing package (it does not raise)."""
    return None if _blocked(importlib.util.resolve_name(name, package)) else _real(name, package)


if BLOCKED:
    sys.meta_path.insert(0, _Blocked())
    importlib.util.find_spec = _find_spec
