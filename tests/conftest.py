"""Test-wide settings: one torch thread (tiny models run faster single-threaded and the
suite then behaves the same on a busy 2-core machine).

Fixture ``standin``: ``standin(name) -> Path`` of a stand-in model directory of the family
``name`` (:mod:`skpo.models.standin`: tiny random model, real config values, chat template,
special tokens and generation config), built once per test session, for running recipes that
target a real model on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


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
