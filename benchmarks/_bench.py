"""Shared pieces of the benchmark scripts: the machine line, interleaved timing, medians,
markdown tables and the measured float32 matmul rate.

Every script times its variants *interleaved* (the order rotates each repetition) and reports
medians and the median of per-repetition ratios: the machine is shared and noisy, so a ratio
measured side by side means more than any absolute number.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def set_threads(threads: int) -> None:
    """``threads`` > 0 pins torch's intra-op threads (0 leaves torch's default)."""
    if threads:
        torch.set_num_threads(threads)


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), python {platform.python_version()}"
    )


def interleave(variants: dict[str, Callable[[], object]], reps: int) -> dict[str, list[float]]:
    """Run each variant ``reps`` times, rotating the order every repetition; seconds per call."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for rep in range(reps):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            t0 = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def median(xs) -> float:
    return statistics.median(list(xs))


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median of per-repetition ratios (each pair measured at the same moment)."""
    return statistics.median(a / b for a, b in zip(num, den))


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def matmul_flops(n: int = 2048, reps: int = 5, shape: tuple[int, int, int] | None = None) -> float:
    """Median FLOP/s of a float32 ``[m,k] @ [k,n]`` matmul (square ``n`` by default)."""
    m, k, nn = shape or (n, n, n)
    a, b = torch.randn(m, k), torch.randn(k, nn)
    a @ b  # warm-up
    inner = max(1, int(2e9 // (2 * m * k * nn)))  # ~2 GFLOP per timed call
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            a @ b
        times.append((time.perf_counter() - t0) / inner)
    return 2 * m * k * nn / statistics.median(times)
