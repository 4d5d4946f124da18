"""``skpo standin``: make a stand-in model directory (tiny, random, real tokenizer surface).

::

    skpo standin --like qwen2.5-math-7b --out runs/standin-qwen [--seed 0] [--hidden-size 64]
                 [--layers 2] [--kv-heads 1] [--force]
    skpo standin --like /path/to/local/hf/model --out runs/standin-local
    skpo standin --list

See :mod:`skpo.models.standin` for what a stand-in keeps from the real model and what it does not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="skpo standin",
        description="Write a tiny randomly initialised stand-in of a real model family (real config values, "
        "chat template, special tokens and generation config; shrunk sizes; small vocabulary).",
    )
    p.add_argument("--like", metavar="NAME|DIR", help="a known family (see --list) or a local Hugging Face model directory")
    p.add_argument("--out", type=Path, metavar="DIR", help="output directory (must be empty unless --force)")
    p.add_argument("--seed", type=int, default=0, help="weight seed; same seed, same bytes (default 0)")
    p.add_argument("--hidden-size", type=int, default=64, help="target hidden size (default 64)")
    p.add_argument("--layers", type=int, default=2, help="number of layers (default 2)")
    p.add_argument("--kv-heads", type=int, default=1, help="key/value heads; query heads keep the real ratio (default 1)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    p.add_argument("--list", action="store_true", help="print the known families and exit")
    return p


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from skpo.models.standin import StandinError, known_families, load_family, make_standin

    if args.list:
        for name in known_families():
            print(f"{name:<24} {load_family(name)['hf_repo']}")
        return 0
    missing = [flag for flag, value in (("--like", args.like), ("--out", args.out)) if value is None]
    if missing:
        print(f"skpo standin: error: {' and '.join(missing)} required (or --list)", file=sys.stderr)
        return 2
    try:
        out = make_standin(
            args.like,
            args.out,
            seed=args.seed,
            hidden_size=args.hidden_size,
            num_layers=args.layers,
            num_kv_heads=args.kv_heads,
            force=args.force,
        )
    except StandinError as e:
        print(f"skpo standin: error: {e}", file=sys.stderr)
        return 2
    record = json.loads((out / "standin.json").read_text(encoding="utf-8"))
    print(f"wrote {out}: stand-in of {record['standin_of']} ({record['model_class']}, {record['parameters']:,} parameters, seed {record['seed']})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
