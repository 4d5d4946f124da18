"""``skpo plot``: learning curves of one or more runs in one PNG.

::

    skpo plot runs/skpo runs/grpo --out curves.png [--metrics accuracy/mean,actor/entropy]
              [--x step|time] [--smooth 0.6] [--title TEXT]

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
    p.add_argument("--x", choices=("step", "time"), default="step", help="horizontal axis")
    p.add_argument("--smooth", type=float, default=0.0, help="EMA weight in [0, 1) (default 0: raw)")
    p.add_argument("--title", default=None)
    p.add_argument("--dpi", type=int, default=120)
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from skpo.analysis.plots import plot_runs

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    try:
        out = plot_runs(args.run_dirs, args.out, metrics, x=args.x, smooth=args.smooth, title=args.title, dpi=args.dpi)
    except (FileNotFoundError, ValueError) as e:
        print(f"skpo plot: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
