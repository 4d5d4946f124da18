"""Test-wide settings: every test starts from the same process state — one torch thread (tiny
models run faster single-threaded, and a second thread spin-waits behind other processes on a
busy 2-core machine), deterministic algorithms off, no debug switch left in the environment —
whatever the test before it left, so no test depends on the order the suite runs in.

Tiers: ``make test`` runs the quick tier (``-m "not slow"``, the default here), ``make
test-all`` everything. A test is marked ``slow`` only when a quick test covers the same code
path; the marker's reason names it. Tests that start processes of their own (several ranks,
CLI subprocesses) share an ``xdist_group`` so that under ``pytest -n`` they run one at a time
on one worker instead of crowding the cores.

Fixture ``standin``: ``standin(name) -> Path`` of a stand-in model directory of the family
``name`` (:mod:`skpo.models.standin`: tiny random model, real config values, chat template,
special tokens and generation config), built once per test session, for running recipes that
target a real model on CPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _same_process_state_for_every_test():
    """One torch thread and default determinism before each test, and the environment variables
    as they were (``skpo --debug`` sets ``SKPO_DEBUG`` in-process; an in-process vLLM engine sets
    ``RANK``/``MASTER_PORT``/…) after it."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(False)
    environ = dict(os.environ)
    os.environ.pop("SKPO_DEBUG", None)
    yield
    os.environ.clear()
    os.environ.update(environ)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(False)


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``standin("qwen2.5-math-7b")`` / ``standin("llama-3.2-3b-instruct")`` → model directory
    (default size, seed 0; built on first use, shared by the whole session — do not modify it)."""
    from skpo.models.standin import make_standin

    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = make_standin(name, tmp_path_factory.mktemp(f"standin-{name}"))
        return built[name]

    return get
