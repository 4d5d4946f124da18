"""``skpo train --config FILE [key.sub=value …] [--resume]``."""

from __future__ import annotations

import argparse
import sys

from skpo.config import ConfigError, load_config


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="skpo train", description="Train a policy from a YAML config.")
    parser.add_argument("--config", help="YAML config (defaults: the embedded SKPO recipe)")
    parser.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--check", action="store_true", help="validate the config and its paths, then exit")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"skpo train: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        from skpo.config import dump_config

        print(dump_config(cfg))
        return 0
    from skpo.training.setup import build_trainer, check_paths

    import logging

    logging.basicConfig(level=logging.INFO, format="skpo: %(message)s")
    try:
        check_paths(cfg)
    except (FileNotFoundError, ValueError) as err:
        print(f"skpo train: {err}", file=sys.stderr)
        return 2
    if args.check:
        print(f"skpo train: {args.config or 'defaults'} is valid")
        return 0
    trainer = build_trainer(cfg, resume=args.resume)
    trainer.train()
    print(f"done: {cfg.log.out_dir} (step {trainer.step})")
    return 0
