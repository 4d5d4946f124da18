"""``skpo train --config FILE [key.sub=value …] [--resume | --overwrite]``.

User errors (config, data, run directory, checkpoints, a full disk) are one line on stderr
with exit status 2; a run stopped by SIGINT/SIGTERM exits with 128 + the signal number after
saving (``skpo.errors``). The config is checked before the training stack (torch, transformers)
is imported, so a mistyped key is reported at once.
"""

from __future__ import annotations

import logging

import yaml

from skpo.commands.parsers import train_parser
from skpo.config import ConfigError, dump_config, load_config
from skpo.errors import log_to_console, run_command


def main(argv: list[str]) -> int:
    return run_command("train", _main, argv)


def _main(argv: list[str]) -> int:
    args = train_parser().parse_intermixed_args(argv)  # options may follow key=value overrides
    overrides = [*args.overrides, *([f"train.threads={args.threads}"] if args.threads else [])]
    cfg = load_config(args.config, overrides, plugins=args.imports)
    # heavy (torch, transformers): imported once the config's schema is valid, so a bad key is
    # reported before seconds of imports
    from skpo.methods import method_to_document, method_yaml
    from skpo.training.distributed import shutdown
    from skpo.training.setup import build_trainer, check_run, check_vllm_available

    resolved = cfg.resolved()  # the method, resolved once when the config loaded
    if args.print_config:
        print(dump_config(cfg))
        print(f"# the resolved method (train.method={cfg.train.method} with the config's method: section; "
              "written to OUT/method.yaml by a run)")
        print(yaml.safe_dump({"resolved_method": method_to_document(resolved.method)}, sort_keys=False,
                             allow_unicode=True))  # (one YAML document with the config above)
        for note in resolved.notes:
            print(f"# note: {note}")
        return 0
    log_to_console(logging.INFO)
    if args.check:
        try:
            notes = check_run(cfg, resume=args.resume, overwrite=args.overwrite, allow_data_change=args.allow_data_change)
        except ValueError as err:  # its messages name the key (reward, benchmarks, device)
            raise ConfigError(str(err)) from err
        print(f"# the resolved method (train.method={cfg.train.method} with the config's method: section)")
        print(method_yaml(resolved.method))
        for note in notes:
            print(f"skpo train: note: {note}")
        what = args.config or "the default configuration" + (" with the overrides" if args.overrides else "")
        print(f"skpo train: {what} is valid: method, run directory ({cfg.log.out_dir}), model, data, reward (run on "
              "a few rows) and benchmarks checked")
        return 0
    if cfg.rollout.engine == "vllm":
        try:
            check_vllm_available()
        except ValueError as err:
            raise ConfigError(str(err)) from err
    trainer = build_trainer(cfg, resume=args.resume, overwrite=args.overwrite, allow_data_change=args.allow_data_change)
    trainer.train()
    if trainer.accelerator.is_main_process:  # one line per run, not per process
        print(f"done: {cfg.log.out_dir} (step {trainer.state.step})")
    shutdown()
    return 0
