"""Locations of files shipped with the repository (benchmarks, the tiny model)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def benchmark_dir() -> Path:
    """Directory holding the benchmark JSONL files (``$SKPO_BENCHMARK_DIR`` overrides)."""
    env = os.environ.get("SKPO_BENCHMARK_DIR")
    path = Path(env) if env else REPO_ROOT / "data" / "benchmarks"
    if not path.is_dir():
        raise FileNotFoundError(
            f"benchmark directory {path} does not exist; set SKPO_BENCHMARK_DIR to a folder of JSONL files"
        )
    return path
