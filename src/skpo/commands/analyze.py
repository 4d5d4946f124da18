"""``skpo analyze``: the paper's analyses on the embedded task, each a JSON file and a figure.

::

    skpo analyze mc-accuracy        [--model M] [--problems 24] [--k-true 256] [--k-est 32]
    skpo analyze shortcut           [--model M] [--problems 200]
    skpo analyze implicit-advantage [--model M | --models A,B,...] [--segments 100] [--k-true 128]
    skpo analyze segment-variance   [--model M | --models A,B,...] [--problems 128] [--segments 8] [--answers 8]

    common: --seed 0  --out DIR (default runs/analysis)  --threads 1  --quick  --device cpu

``--model`` is resolved like ``skpo eval``'s (:func:`skpo.commands.evaluate.resolve_model_dir`):
``tiny-arith`` (the shipped warm start, the default), a model directory, a training checkpoint,
or a run directory (its latest checkpoint). Problems are the first ``--problems`` of the fixed
held-out set of the task recorded with the model (``warmstart.json``: chained arithmetic at its
difficulty, or countdown); ``shortcut`` and ``implicit-advantage`` check arithmetic lines and
take arithmetic models only. ``segment-variance`` with ``--models`` puts several models, each
on its own task, side by side.
``--quick`` is a few-second setting of the same code path, for the test suite.

Writes ``DIR/<analysis>.json`` (the numbers, the exact command, the settings, the runtime) and
``DIR/<analysis>.png``. What each analysis computes: ``docs/analyses.md`` and the modules
:mod:`skpo.analysis.mc_accuracy`, :mod:`skpo.analysis.shortcut`,
:mod:`skpo.analysis.implicit_advantage`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from skpo.analysis import implicit_advantage, mc_accuracy, segment_variance, shortcut
from skpo.commands.evaluate import resolve_model_dir, task_config_for, tokenizer_dir
from skpo.commands.parsers import analyze_parser
from skpo.models.loading import load_policy, load_tokenizer
from skpo.tasks import countdown
from skpo.tasks.arith import ArithConfig, heldout_problems
from skpo.tasks.countdown import CountdownConfig

MODULES = {"mc-accuracy": mc_accuracy, "shortcut": shortcut, "implicit-advantage": implicit_advantage,
           "segment-variance": segment_variance}
SETTINGS: dict[str, Any] = {"mc-accuracy": mc_accuracy.McAccuracySettings, "shortcut": shortcut.ShortcutSettings,
            "implicit-advantage": implicit_advantage.ImplicitAdvantageSettings,
            "segment-variance": segment_variance.SegmentVarianceSettings}
ARITH_ONLY = ("shortcut", "implicit-advantage")  # they check arithmetic lines


def task_problems(config: ArithConfig | CountdownConfig, n: int) -> list:
    """The first ``n`` problems of the task's fixed held-out set."""
    if isinstance(config, CountdownConfig):
        return countdown.heldout_problems(config, n=n)
    return heldout_problems(config, n=n)


def _settings(args: argparse.Namespace) -> Any:
    """The analysis settings: defaults (or ``--quick``), then every flag that was given."""
    S = SETTINGS[args.analysis]  # noqa: N806  (the settings class)
    updates: dict[str, Any] = {"seed": args.seed}
    if args.batch_size is not None:
        updates["batch_size"] = args.batch_size
    if getattr(args, "group_size", None) is not None:
        updates["group_size"] = args.group_size
    if args.analysis == "mc-accuracy":
        if args.problems is not None:
            updates["problems"] = args.problems
        for flag in ("k_true", "k_est"):
            if getattr(args, flag) is not None:
                updates[flag] = getattr(args, flag)
        if args.ks is not None:
            ks = tuple(int(k) for k in args.ks.split(",") if k.strip())
            updates["ks"] = ks
            base = S.quick() if args.quick else S()
            if base.report_k not in ks:
                updates["report_k"] = ks[min(len(ks) - 1, len(ks) // 2)]
    elif args.analysis == "shortcut":
        if args.problems is not None:
            updates["problems"] = args.problems
    elif args.analysis == "segment-variance":
        for flag, key in (("problems", "problems"), ("segments", "segments"), ("answers", "answers")):
            if getattr(args, flag) is not None:
                updates[key] = getattr(args, flag)
    else:
        n = args.segments if args.segments is not None else args.problems
        if args.segments is not None and args.problems is not None and args.segments > args.problems:
            raise ValueError(f"--segments {args.segments} exceeds --problems {args.problems} (one segment per problem)")
        if n is not None:
            updates["segments"] = n
        for flag in ("k_true", "length", "length_prior"):
            if getattr(args, flag) is not None:
                updates[flag] = getattr(args, flag)
    base = S.quick(args.seed) if args.quick else S()
    return replace(base, **updates)


def _label(arg: str) -> str:
    parts = Path(arg).parts
    return arg if len(parts) <= 2 else str(Path(*parts[-2:]))


def main(argv: list[str]) -> int:
    parser = analyze_parser()
    args = parser.parse_args(argv)
    started = time.perf_counter()
    models = getattr(args, "models", None)
    model_args = [m.strip() for m in models.split(",") if m.strip()] if models else [args.model]
    try:
        settings = _settings(args)
        model_dirs = [resolve_model_dir(m) for m in model_args]
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        print(f"skpo analyze: error: {e}", file=sys.stderr)
        return 2

    torch.set_num_threads(max(1, args.threads))

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", file=sys.stderr, flush=True)

    def load(model_dir: Path):
        try:
            return load_policy(model_dir, device=args.device, dtype="float32"), load_tokenizer(tokenizer_dir(model_dir))
        except (FileNotFoundError, NotADirectoryError, OSError, ValueError) as e:
            raise SystemExit(f"skpo analyze: error loading {model_dir}: {e}") from None

    configs = [task_config_for(d) or ArithConfig() for d in model_dirs]
    config = configs[0]
    if args.analysis in ARITH_ONLY and any(isinstance(c, CountdownConfig) for c in configs):
        print(f"skpo analyze: error: {args.analysis} checks chained-arithmetic lines; "
              f"{model_args[[isinstance(c, CountdownConfig) for c in configs].index(True)]} is a countdown model "
              "(mc-accuracy and segment-variance take both tasks)", file=sys.stderr)
        return 2
    n_problems = settings.segments if args.analysis == "implicit-advantage" else settings.problems
    problems = task_problems(config, n_problems)
    log(f"{args.analysis}: {len(problems)} held-out problems, model(s) {', '.join(map(str, model_dirs))}")

    if args.analysis == "segment-variance":
        per_model: dict[str, Any] = {}
        for arg, model_dir, task in zip(model_args, model_dirs, configs):
            model, tokenizer = load(model_dir)
            log(f"{arg}: {'countdown' if isinstance(task, CountdownConfig) else 'arithmetic'}")
            per_model[_label(arg)] = MODULES[args.analysis].run(model, tokenizer, task_problems(task, n_problems),
                                                                settings, log)
        first = next(iter(per_model.values()))
        results = {"models": per_model, "settings": first.pop("settings")}
        for r in per_model.values():
            r.pop("settings", None)
    elif args.analysis in ("mc-accuracy", "shortcut"):
        model, tokenizer = load(model_dirs[0])
        results = MODULES[args.analysis].run(model, tokenizer, problems, settings, log)
    else:
        loaded = []
        for arg, model_dir in zip(model_args, model_dirs):
            model, tokenizer = load(model_dir)
            loaded.append((_label(arg), model, tokenizer))
        results = MODULES[args.analysis].run(loaded, problems, settings, log)

    analysis = MODULES[args.analysis]
    name = args.analysis.replace("-", "_")
    args.out.mkdir(parents=True, exist_ok=True)
    figure = analysis.plot(results, args.out / f"{name}.png")
    runtime = time.perf_counter() - started
    record = {
        "analysis": args.analysis,
        "command": ["skpo", "analyze", *argv],
        "model_args": model_args,
        "models": [str(d) for d in model_dirs],
        "task": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()},
        "task_name": "countdown" if isinstance(config, CountdownConfig) else "arith",
        **({"tasks": [{"model": a, "task_name": "countdown" if isinstance(c, CountdownConfig) else "arith",
                       **{k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(c).items()}}
                      for a, c in zip(model_args, configs)]} if len(configs) > 1 else {}),
        "settings": results.pop("settings"),
        "quick": bool(args.quick),
        "threads": args.threads,
        "device": args.device,
        "runtime_s": round(runtime, 2),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "results": results,
    }
    out_json = args.out / f"{name}.json"
    out_json.write_text(json.dumps(record, indent=1) + "\n")
    log(f"wrote {out_json} and {figure} ({runtime:.1f} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
