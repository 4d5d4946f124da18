"""``skpo plot``: learning curves of one or more runs in one PNG.

::

    skpo plot runs/skpo runs/grpo --out curves.png [--metrics accuracy/mean,actor/entropy]
              [--panels accuracy,loss,grad_norm] [--labels "skpo s1,skpo s2" | --labels dir]
              [--x step|time|tokens] [--smooth 0.6] [--title TEXT]

Each run directory needs ``metrics.jsonl`` (one JSON object per line with ``step``); ``run.json``
with ``{"method": ...}`` names it in the legend. See :mod:`skpo.analysis.plots`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skpo plot", description="Learning curves of one or more runs, overlaid.")
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="directories holding metrics.jsonl")
    p.add_argument("--out", type=Path, default=Path("curves.png"), help="image to write (default curves.png)")
    p.add_argument("--metrics", default=None,
                   help="comma-separated metric names, one panel each (default: accuracy, reward, entropy, length)")
    p.add_argument("--panels", default=None,
                   help="comma-separated panel names: accuracy, reward, entropy, length, eval, loss, grad_norm, clip, kl, "
                        "tokens, time")
    p.add_argument("--labels", default=None,
                   help="comma-separated legend labels, one per run (distinct labels, distinct colours); 'dir' = the "
                        "directory names. Default: each run's method (runs of one method share a colour)")
    p.add_argument("--x", choices=("step", "time", "tokens"), default="step",
                   help="horizontal axis (tokens = cumulative decoded rollout tokens)")
    p.add_argument("--smooth", type=float, default=0.0, help="EMA weight in [0, 1) (default 0: raw)")
    p.add_argument("--title", default=None)
    p.add_argument("--dpi", type=int, default=120)
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from skpo.analysis.plots import plot_runs

    def split(text: str | None) -> list[str] | None:
        return [m.strip() for m in text.split(",") if m.strip()] if text else None

    if args.metrics and args.panels:
        print("skpo plot: error: give --metrics or --panels, not both", file=sys.stderr)
        return 2
    try:
        out = plot_runs(args.run_dirs, args.out, split(args.metrics), x=args.x, smooth=args.smooth, title=args.title,
                        dpi=args.dpi, labels=split(args.labels), panels=split(args.panels))
    except (FileNotFoundError, ValueError) as e:
        print(f"skpo plot: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
