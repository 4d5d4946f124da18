"""Learning curves from run directories: read ``metrics.jsonl``, draw panels, save a PNG.

A run directory holds ``metrics.jsonl``, one JSON object per line::

    {"step": 10, "time": 12.5, "reward/mean": 0.31, "accuracy/mean": 0.42, "actor/entropy": 0.9, ...}

Lines may lack any metric key; ``step`` is required. An optional ``run.json`` with
``{"method": "skpo"}`` names the run in legends (default: the directory name).

Default panels (each drawn when at least one run logs at least one of its metrics):

=================  =========================================================================
accuracy           ``accuracy/mean`` and every ``eval/<benchmark>/avg@k``
reward             ``reward/mean``, ``upstream/reward``, ``downstream/reward``
entropy            ``actor/entropy``
response length    ``response_length/mean``
=================  =========================================================================

``metrics=[...]`` replaces them with one panel per named metric. Runs are overlaid in every
panel; runs with the same method name share a colour (several seeds of one method read as one
family), and within a panel each metric gets its own line style. Everything is drawn with the
non-interactive Agg backend, so it works on machines without a display.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skpo.jsonl import read_jsonl

__all__ = [
    "DEFAULT_PANELS",
    "NAMED_PANELS",
    "MetricsFileError",
    "Panel",
    "Run",
    "build_figure",
    "load_run",
    "plot_runs",
    "read_metrics",
    "run_label",
    "select_panels",
]


class MetricsFileError(ValueError):
    """A run directory or metrics line that cannot be read; the message names file and line."""


@dataclass(frozen=True)
class Panel:
    """One subplot: a title and the metrics it shows (exact names or regular expressions)."""

    title: str
    metrics: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()

    def matches(self, key: str) -> bool:
        return key in self.metrics or any(re.fullmatch(p, key) for p in self.patterns)


DEFAULT_PANELS: tuple[Panel, ...] = (
    Panel("accuracy", ("accuracy/mean",), (r"eval/[^/]+/avg@\d+",)),
    Panel("reward", ("reward/mean", "upstream/reward", "downstream/reward")),
    Panel("entropy", ("actor/entropy",)),
    Panel("response length", ("response_length/mean",)),
)

# Every panel ``--panels`` can ask for by name (the defaults and a few more); metric names are
# the same for every method (aggregates) plus per-role prefixes, so one panel fits all runs.
NAMED_PANELS: dict[str, Panel] = {
    "accuracy": DEFAULT_PANELS[0],
    "reward": DEFAULT_PANELS[1],
    "entropy": DEFAULT_PANELS[2],
    "length": DEFAULT_PANELS[3],
    "eval": Panel("evaluation", (), (r"eval/[^/]+/(avg|pass|maj)@\d+",)),
    "loss": Panel("policy loss", ("actor/pg_loss",), (r"[^/]+/pg_loss",)),
    "grad_norm": Panel("gradient norm", ("actor/grad_norm",)),
    "clip": Panel("clipped fraction", ("actor/pg_clipfrac",), (r"[^/]+/pg_clipfrac",)),
    "kl": Panel("KL to the reference", ("actor/kl",), (r"[^/]+/kl(_in_reward)?",)),
    "tokens": Panel("decoded tokens per step", ("tokens/decoded",)),
    "time": Panel("seconds per step", ("time/step",)),
}


@dataclass
class Run:
    """One run: its label, directory and metric records ``(line number, record)``."""

    label: str
    path: Path
    records: list[tuple[int, dict[str, Any]]] = field(repr=False)

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    def keys(self) -> set[str]:
        """Every key that appears on some line."""
        return {key for _, rec in self.records for key in rec}

    def series(self, metric: str, x: str = "step") -> tuple[list[float], list[float]]:
        """``(xs, ys)`` of ``metric`` over the lines that hold it (``null`` counts as absent).

        Raises:
            MetricsFileError: when a line holds a non-numeric value for ``metric`` or lacks ``x``.
        """
        xs: list[float] = []
        ys: list[float] = []
        for line, rec in self.records:
            if metric not in rec or rec[metric] is None:
                continue
            value = rec[metric]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise MetricsFileError(f"{self.metrics_file}: line {line}: {metric!r} is not a number: {value!r:.60}")
            xv = rec.get(x)
            if isinstance(xv, bool) or not isinstance(xv, (int, float)):
                raise MetricsFileError(f"{self.metrics_file}: line {line}: missing or non-numeric {x!r}")
            xs.append(float(xv))
            ys.append(float(value))
        return xs, ys


def read_metrics(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """The records of a ``metrics.jsonl`` file as ``(line number, record)``, blank lines skipped.

    Raises:
        FileNotFoundError: naming the file.
        MetricsFileError: a line that is not a JSON object or has no integer ``step``
            (file and line number in the message).
    """
    records = []
    for line_no, rec in read_jsonl(path, MetricsFileError, what="metrics file"):
        step = rec.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise MetricsFileError(f"{path}: line {line_no}: missing or non-integer 'step' ({step!r})")
        records.append((line_no, rec))
    return records


def run_label(run_dir: str | Path) -> str:
    """``run.json``'s ``method`` when present (and a string), else the directory name."""
    run_dir = Path(run_dir)
    info = run_dir / "run.json"
    if info.is_file():
        try:
            data = json.loads(info.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise MetricsFileError(f"{info}: invalid JSON: {err.msg} (line {err.lineno})") from None
        if isinstance(data, dict) and isinstance(data.get("method"), str) and data["method"]:
            return data["method"]
    return run_dir.resolve().name


def load_run(run_dir: str | Path) -> Run:
    """A :class:`Run` from a directory holding ``metrics.jsonl`` (error names the directory)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist")
    if not (run_dir / "metrics.jsonl").is_file():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} has no metrics.jsonl")
    return Run(run_label(run_dir), run_dir, read_metrics(run_dir / "metrics.jsonl"))


def select_panels(runs: Sequence[Run], metrics: Sequence[str] | None = None,
                  panels: Sequence[str] | None = None) -> list[tuple[Panel, list[str]]]:
    """The panels to draw and, for each, the metric names present in at least one run.

    With ``metrics`` given: one panel per metric, in that order (a metric no run logs is an
    error naming it). With ``panels``: those of :data:`NAMED_PANELS`, in that order (an unknown
    name or a panel no run has data for is an error naming it). Otherwise
    :data:`DEFAULT_PANELS` that have data.
    """
    present: set[str] = set()
    for run in runs:
        present |= run.keys()
    if panels:
        unknown = [p for p in panels if p not in NAMED_PANELS]
        if unknown:
            raise MetricsFileError(f"unknown panel(s) {unknown}; panels: {', '.join(NAMED_PANELS)}")
        out = []
        for name in panels:
            panel = NAMED_PANELS[name]
            names = [m for m in panel.metrics if m in present]
            names += sorted(k for k in present if k not in panel.metrics and panel.matches(k))
            if not names:
                raise MetricsFileError(f"panel {name!r}: no run logs {', '.join(panel.metrics + panel.patterns)}")
            out.append((panel, names))
        return out
    if metrics:
        missing = [m for m in metrics if m not in present]
        if missing:
            raise MetricsFileError(
                f"no run logs {', '.join(repr(m) for m in missing)}; "
                f"logged: {', '.join(sorted(present - {'step', 'time'})) or 'nothing'}"
            )
        return [(Panel(m, (m,)), [m]) for m in metrics]
    chosen = []
    for panel in DEFAULT_PANELS:
        names = [m for m in panel.metrics if m in present]
        names += sorted(k for k in present if k not in panel.metrics and panel.matches(k))
        if names:
            chosen.append((panel, names))
    return chosen


def _ema(values: list[float], weight: float) -> list[float]:
    if weight <= 0 or not values:
        return values
    out, acc = [], values[0]
    for v in values:
        acc = weight * acc + (1 - weight) * v
        out.append(acc)
    return out


_STYLES = ("-", "--", ":", "-.")


def build_figure(
    runs: Sequence[Run],
    metrics: Sequence[str] | None = None,
    *,
    x: str = "step",
    smooth: float = 0.0,
    title: str | None = None,
    labels: Sequence[str] | None = None,
    panels: Sequence[str] | None = None,
):
    """A matplotlib ``Figure`` with one axis per panel and one line per (run, metric) with data.

    Args:
        runs: the runs to overlay.
        metrics: explicit metric names (one panel each); ``panels``: named panels
            (:data:`NAMED_PANELS`); default panels otherwise.
        x: ``"step"``, ``"time"`` or ``"tokens"`` (cumulative decoded rollout tokens) on the
            horizontal axis.
        smooth: exponential moving average weight in ``[0, 1)`` (0 = raw values).
        title: figure title.
        labels: one legend label per run (default: each run's method, with its directory name
            when several runs share a method, so every run has its own colour). Runs given equal
            labels share a colour (seeds of one method read as one family); distinct labels get
            distinct colours.

    Raises:
        MetricsFileError: when no panel has data, or a value is not a number.
    """
    import matplotlib  # heavy: loaded when a figure is drawn

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not runs:
        raise ValueError("no runs to plot")
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    if labels is not None:
        if len(labels) != len(runs):
            raise ValueError(f"{len(labels)} labels for {len(runs)} runs; give one label per run")
        runs = [Run(label, run.path, run.records) for label, run in zip(labels, runs)]
    else:  # every run its own colour and legend entry: runs of one method are told apart by their directory
        counts = {label: sum(run.label == label for run in runs) for label in {run.label for run in runs}}
        runs = [run if counts[run.label] == 1 else Run(f"{run.label} · {Path(run.path).name}", run.path, run.records)
                for run in runs]
        if len({run.label for run in runs}) < len(runs):  # equal directory names too: number them
            runs = [Run(f"{run.label} #{i + 1}", run.path, run.records) for i, run in enumerate(runs)]
    x_key = {"step": "step", "time": "time", "tokens": "tokens/seen"}.get(x)
    if x_key is None:
        raise ValueError(f"x must be step, time or tokens (got {x!r})")
    selected = select_panels(runs, metrics, panels)
    if not selected:
        raise MetricsFileError(
            "none of the runs logs a plottable metric (accuracy/mean, reward/mean, actor/entropy, "
            "response_length/mean, eval/*/avg@k, ...); pass --metrics to choose some"
        )
    labels = list(dict.fromkeys(run.label for run in runs))
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    colour = {label: cycle[i % len(cycle)] for i, label in enumerate(labels)}

    ncols = 1 if len(selected) == 1 else 2
    nrows = math.ceil(len(selected) / ncols)
    fig = Figure(figsize=(6.0 * ncols, 3.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(selected) :]:
        fig.delaxes(ax)
    for ax, (panel, names) in zip(axes, selected):
        labelled: set[str] = set()
        for run in runs:
            for m_i, metric in enumerate(names):
                xs, ys = run.series(metric, x_key)
                if not xs:
                    continue
                legend = run.label if len(names) == 1 else f"{run.label} · {metric}"
                ax.plot(
                    xs, _ema(ys, smooth), color=colour[run.label], linestyle=_STYLES[m_i % len(_STYLES)],
                    linewidth=1.4, label=None if legend in labelled else legend,
                )
                labelled.add(legend)
        ax.set_title(panel.title)
        ax.set_xlabel({"time": "time (s)", "tokens": "decoded rollout tokens"}.get(x, "step"))
        if x == "step":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(names) == 1:
            ax.set_ylabel(names[0])
        ax.grid(True, alpha=0.3)
        if labelled:
            ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    metrics: Sequence[str] | None = None,
    *,
    x: str = "step",
    smooth: float = 0.0,
    title: str | None = None,
    dpi: int = 120,
    labels: Sequence[str] | None = None,
    panels: Sequence[str] | None = None,
) -> Path:
    """Load ``run_dirs``, draw :func:`build_figure` and save it as an image at ``out``.
    ``labels=["dir"]`` labels each run by its directory name."""
    runs = [load_run(d) for d in run_dirs]
    if labels is not None and list(labels) == ["dir"]:
        labels = [Path(d).resolve().name for d in run_dirs]
    fig = build_figure(runs, metrics, x=x, smooth=smooth, title=title, labels=labels, panels=panels)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out
