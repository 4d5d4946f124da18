"""``skpo train --config FILE [key.sub=value …] [--resume | --overwrite]``.

User errors (config, data, run directory, checkpoints, a full disk) are one line on stderr
with exit status 2; a run stopped by SIGINT/SIGTERM exits with 128 + the signal number after
saving (``skpo.errors``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from skpo.errors import log_to_console, run_command


def method_names() -> list[str]:
    """The shipped methods, read off their documents (no import of the training stack: ``--help``
    answers at once)."""
    return sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "methods").glob("*.yaml"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skpo train", description="Train a policy from a YAML config.",
        epilog=f"methods (train.method=NAME, or a method .yaml file; `skpo methods` for details): {', '.join(method_names())}. "
               "Any part of a method can be overridden: method.terms.<role>.<key>=value (docs/methods.md).")
    parser.add_argument("--config", help="YAML config (defaults: the embedded SKPO recipe)")
    parser.add_argument("--resume", action="store_true", help="continue the run in log.out_dir from its newest intact checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in log.out_dir (its files are removed first)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and method, then exit")
    parser.add_argument("--check", action="store_true", help="validate the config and its paths, then exit")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="a module or .py file to import first: your own estimators, losses, rollout kinds, "
                        "samplers or rewards (repeatable; recorded in the config's plugins)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch CPU threads (train.threads; 1 when other jobs share the cores)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    return parser


def main(argv: list[str]) -> int:
    return run_command("train", _main, argv)


def _main(argv: list[str]) -> int:
    args = _parser().parse_intermixed_args(argv)  # options may follow key=value overrides
    from skpo.config import ConfigError, load_config

    overrides = [*args.overrides, *([f"train.threads={args.threads}"] if args.threads else [])]
    cfg = load_config(args.config, overrides, plugins=args.imports)
    if args.print_config:
        import yaml

        from skpo.config import dump_config
        from skpo.methods import method_to_document, resolve_for_run

        method, notes = resolve_for_run(cfg)
        print(dump_config(cfg))
        print(f"# the resolved method (train.method={cfg.train.method} with the config's overrides; "
              "written to OUT/method.yaml by a run)")
        print(yaml.safe_dump({"resolved_method": method_to_document(method)}, sort_keys=False, allow_unicode=True))
        for note in notes:
            print(f"# note: {note}")
        return 0
    if not args.check:  # a used or locked directory fails before the heavy imports and the model load
        from skpo.training.run_dir import preflight

        preflight(cfg.log.out_dir, resume=args.resume, overwrite=args.overwrite)
    import logging

    from skpo.training.setup import build_trainer, check_paths, check_run

    log_to_console(logging.INFO)
    if args.check:
        try:
            notes = check_run(cfg, resume=args.resume, overwrite=args.overwrite)
        except ValueError as err:  # its messages name the key (reward, benchmarks, device)
            raise ConfigError(str(err)) from err
        for note in notes:
            print(f"skpo train: note: {note}")
        print(f"skpo train: {args.config or 'defaults'} is valid (method, run directory, model, data, reward and "
              "benchmarks checked)")
        return 0
    try:
        check_paths(cfg)
    except ValueError as err:  # its messages name the key (reward, benchmarks)
        raise ConfigError(str(err)) from err
    trainer = build_trainer(cfg, resume=args.resume, overwrite=args.overwrite)
    trainer.train()
    if trainer.accelerator.is_main_process:  # one line per run, not per process
        print(f"done: {cfg.log.out_dir} (step {trainer.step})")
    from skpo.training.distributed import shutdown

    shutdown()
    return 0
