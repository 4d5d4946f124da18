"""``skpo plot``: learning curves of one or more runs in one PNG.

::

    skpo plot runs/skpo runs/grpo --out curves.png [--metrics accuracy/mean,actor/entropy]
              [--panels accuracy,loss,grad_norm] [--labels "skpo s1,skpo s2" | --labels dir]
              [--x step|time|tokens] [--smooth 0.6] [--title TEXT]

Each run directory needs ``metrics.jsonl`` (one JSON object per line with ``step``); ``run.json``
with ``{"method": ...}`` names it in the legend. See :mod:`skpo.analysis.plots`.
"""

from __future__ import annotations

import sys

from skpo.analysis.plots import plot_runs
from skpo.commands.parsers import plot_parser


def main(argv: list[str]) -> int:
    args = plot_parser().parse_args(argv)
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
