"""Command line: ``skpo [--debug] <command> [args…]``.

Each command lives in its own module exposing ``main(argv: list[str]) -> int``, its parser in
:mod:`skpo.commands.parsers`; this file only dispatches (``--help`` from the parser alone), so
importing the CLI stays cheap and a broken optional command cannot break the rest.
User errors are one line ``skpo <command>: <message>`` with exit status 2; ``--debug`` (or
``SKPO_DEBUG=1``) shows their traceback (``skpo.errors``).
"""

from __future__ import annotations

import importlib
import os
import sys

from skpo.errors import DEBUG_ENV, did_you_mean, quiet_when_piped, run_command
from skpo.version import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "main": ("skpo.commands.main_job", "the main job: SKPO on the embedded default, then evaluation"),
    "train": ("skpo.commands.train", "train a policy from a YAML config"),
    "methods": ("skpo.commands.methods", "the shipped methods: rollout, estimator, loss, defaults, source"),
    "eval": ("skpo.commands.evaluate", "evaluate a checkpoint or HF model directory"),
    "warmstart": ("skpo.commands.warmstart", "supervised warm start of the tiny model on the synthetic task"),
    "plot": ("skpo.commands.plot", "learning curves of one or more runs"),
    "compare": ("skpo.commands.compare", "methods at an equal rollout-token budget over seeds (mean ± 95% CI)"),
    "analyze": ("skpo.commands.analyze", "the paper's analyses: mc-accuracy | shortcut | implicit-advantage"),
    "standin": ("skpo.commands.standin", "tiny random stand-in of a real model family (real template and ids)"),
}


def _usage() -> str:
    lines = ["usage: skpo [--debug] [--version] <command> [args…]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--debug":
        os.environ[DEBUG_ENV] = "1"  # commands (and their worker processes) read it from here
        argv = argv[1:]
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    if argv[0] in {"-V", "--version"}:
        print(f"skpo {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"skpo: unknown command {name!r}{did_you_mean(name, COMMANDS)}\n\n{_usage()}", file=sys.stderr)
        return 2
    quiet_when_piped()
    if "-h" in rest or "--help" in rest:  # the light parser answers: the command's stack is not loaded
        return _help(name, rest)
    module = importlib.import_module(COMMANDS[name][0])
    return run_command(name, module.main, rest)


def _help(name: str, argv: list[str]) -> int:
    """``skpo <command> … --help`` from :mod:`skpo.commands.parsers` (a subcommand's too)."""
    parsers = importlib.import_module("skpo.commands.parsers")
    parsers.PARSERS[name]().parse_known_args(argv)  # prints the help and exits (SystemExit 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
