"""Command line: ``skpo <command> [args…]``.

Each command lives in its own module exposing ``main(argv: list[str]) -> int``; this file only
dispatches, so importing the CLI stays cheap and a broken optional command cannot break the rest.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "main": ("skpo.commands.main_job", "the main job: SKPO on the embedded default, then evaluation"),
    "train": ("skpo.commands.train", "train a policy from a YAML config"),
    "eval": ("skpo.commands.evaluate", "evaluate a checkpoint or HF model directory"),
    "warmstart": ("skpo.warmstart", "supervised warm start of the tiny model on the synthetic task"),
    "plot": ("skpo.commands.plot", "learning curves of one or more runs"),
    "compare": ("skpo.commands.compare", "methods at an equal rollout-token budget over seeds (mean ± 95% CI)"),
    "analyze": ("skpo.commands.analyze", "the paper's analyses: mc-accuracy | shortcut | implicit-advantage"),
    "standin": ("skpo.commands.standin", "tiny random stand-in of a real model family (real template and ids)"),
}


def _usage() -> str:
    lines = ["usage: skpo <command> [args…]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"skpo: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
