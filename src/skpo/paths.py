"""Locations of files shipped with the repository (benchmarks, the tiny model, the method documents)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
METHOD_DIR = Path(__file__).resolve().parent / "methods"  # the shipped method documents (<name>.yaml)


def shipped_method_names() -> list[str]:
    """Names of the shipped methods, read off their documents' file names (nothing is imported,
    so a config's schema is checked before the method registries load torch)."""
    return sorted(p.stem for p in METHOD_DIR.glob("*.yaml"))


def is_method_file(name: str) -> bool:
    """``train.method`` names a document file (``my_method.yaml``) rather than a shipped method."""
    return name.endswith((".yaml", ".yml")) or "/" in name


def benchmark_dir() -> Path:
    """Directory holding the benchmark JSONL files (``$SKPO_BENCHMARK_DIR`` overrides)."""
    env = os.environ.get("SKPO_BENCHMARK_DIR")
    path = Path(env) if env else REPO_ROOT / "data" / "benchmarks"
    if not path.is_dir():
        raise FileNotFoundError(
            f"benchmark directory {path} does not exist; set SKPO_BENCHMARK_DIR to a folder of JSONL files"
        )
    return path
