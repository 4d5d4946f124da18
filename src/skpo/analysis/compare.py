"""Equal-budget comparison of methods over seeds: the statistics and the figures.

Pure functions over the per-run results that ``skpo compare`` writes (one ``result.json`` per
method × seed); no training here.

- :func:`mean_ci`: mean and the half-width of a two-sided 95 % Student-t confidence interval,
  ``t_{0.975, n−1} · s / √n`` (``s`` the sample standard deviation); ``n = 1`` gives no interval.
- :func:`summarize`: per method, the mean ± CI of every final metric.
- :func:`curve_on_grid`: a run's in-training evaluations interpolated onto a common grid of
  rollout tokens (or seconds), so curves of different seeds average point by point.
- :func:`plot_comparison`: accuracy against rollout tokens and against training wall time,
  the seed mean with its 95 % band per method.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["T_975", "curve_on_grid", "mean_ci", "plot_comparison", "summarize", "t_quantile"]

# Two-sided 95 % Student-t quantiles t_{0.975, df}, df = 1 … 30 (standard tables).
T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)


def t_quantile(df: int) -> float:
    """``t_{0.975, df}``; the normal 1.96 beyond the table."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return T_975[df - 1] if df <= len(T_975) else 1.96


def mean_ci(values: Sequence[float]) -> tuple[float, float | None]:
    """``(mean, half-width of the 95 % t interval)``; the half-width is ``None`` for one value."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_ci of no values")
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    return mean, t_quantile(len(xs) - 1) * sd / math.sqrt(len(xs))


def summarize(results: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per method (in first-seen order): ``n`` seeds and, per metric, ``{"mean", "ci95", "values"}``."""
    by_method: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        by_method.setdefault(str(r["method"]), []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for method, runs in by_method.items():
        row: dict[str, Any] = {"n": len(runs), "seeds": sorted(int(r["seed"]) for r in runs)}
        for m in metrics:
            values = [float(r[m]) for r in runs if r.get(m) is not None]
            if values:
                mean, ci = mean_ci(values)
                row[m] = {"mean": mean, "ci95": ci, "values": values}
        out[method] = row
    return out


def curve_on_grid(xs: Sequence[float], ys: Sequence[float], grid: Sequence[float]) -> list[float | None]:
    """``ys`` at the ``grid`` points by linear interpolation of ``(xs, ys)`` (sorted by ``x``);
    ``None`` outside ``[min xs, max xs]``."""
    pts = sorted(zip(xs, ys))
    out: list[float | None] = []
    for g in grid:
        value = None
        for (x0, y0), (x1, y1) in itertools.pairwise(pts):
            if x0 <= g <= x1:
                value = y0 if x1 == x0 else y0 + (y1 - y0) * (g - x0) / (x1 - x0)
                break
        if value is None and pts and g == pts[0][0]:
            value = pts[0][1]
        out.append(value)
    return out


def _mean_band(curves: Sequence[Sequence[float | None]]) -> tuple[list[float], list[float], list[int]]:
    means, halfs, keep = [], [], []
    for i in range(len(curves[0])):
        col = [v for c in curves if (v := c[i]) is not None]
        if col:
            m, h = mean_ci(col)
            means.append(m)
            halfs.append(h or 0.0)
            keep.append(i)
    return means, halfs, keep


def plot_comparison(results: Sequence[Mapping[str, Any]], out: Path, metric: str = "avg@8", title: str = "") -> Path:
    """Two panels — accuracy vs rollout tokens, vs training seconds — mean and 95 % band over
    seeds per method, from each run's ``curve`` (``[{"tokens", "seconds", metric}, …]``)."""
    import matplotlib  # heavy: loaded when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    by_method: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        by_method.setdefault(str(r["method"]), []).append(r)
    colours = plt.get_cmap("tab10")
    for c, (method, runs) in enumerate(by_method.items()):
        for ax, xkey, label in ((axes[0], "tokens", "rollout tokens decoded"), (axes[1], "seconds", "training wall time (s)")):
            pts = [(p[xkey], p[metric]) for r in runs for p in r.get("curve", []) if p.get(metric) is not None]
            if not pts:
                continue
            hi = min(max(p[xkey] for p in r["curve"]) for r in runs if r.get("curve"))
            grid = [hi * i / 20 for i in range(21)]
            curves = [curve_on_grid([p[xkey] for p in r["curve"]], [p[metric] for p in r["curve"]], grid)
                      for r in runs if r.get("curve")]
            means, halfs, keep = _mean_band(curves)
            xs = [grid[i] for i in keep]
            ax.plot(xs, means, color=colours(c % 10), label=f"{method} (n={len(runs)})")
            ax.fill_between(xs, [m - h for m, h in zip(means, halfs)], [m + h for m, h in zip(means, halfs)],
                            color=colours(c % 10), alpha=0.15)
            ax.set_xlabel(label)
            ax.set_ylabel(f"held-out {metric}")
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
