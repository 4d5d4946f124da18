"""``skpo standin``: make a stand-in model directory (tiny, random, real tokenizer surface).

::

    skpo standin --like qwen2.5-math-7b --out runs/standin-qwen [--seed 0] [--hidden-size 64]
                 [--layers 2] [--kv-heads 1] [--force]
    skpo standin --like /path/to/local/hf/model --out runs/standin-local
    skpo standin --list

See :mod:`skpo.models.standin` for what a stand-in keeps from the real model and what it does not.
"""

from __future__ import annotations

import json
import sys

from skpo.commands.parsers import standin_parser
from skpo.models.standin import StandinError, known_families, load_family, make_standin


def main(argv: list[str]) -> int:
    parser = standin_parser()
    args = parser.parse_args(argv)
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
