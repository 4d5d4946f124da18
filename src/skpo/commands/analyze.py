"""``skpo analyze``: the paper's analyses on the embedded task, each a JSON file and a figure.

::

    skpo analyze mc-accuracy        [--model M] [--problems 24] [--k-true 256] [--k-est 32]
    skpo analyze shortcut           [--model M] [--problems 200]
    skpo analyze implicit-advantage [--model M | --models A,B,...] [--segments 100] [--k-true 128]

    common: --seed 0  --out DIR (default runs/analysis)  --threads 1  --quick  --device cpu

``--model`` is resolved like ``skpo eval``'s (:func:`skpo.commands.evaluate.resolve_model_dir`):
``tiny-arith`` (the shipped warm start, the default), a model directory, a training checkpoint,
or a run directory (its latest checkpoint). Problems are the first ``--problems`` of the fixed
held-out set, at the task difficulty recorded with the model (``warmstart.json``).
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

ANALYSES = ("mc-accuracy", "shortcut", "implicit-advantage")


def _common(p: argparse.ArgumentParser, problems_help: str) -> None:
    p.add_argument("--model", default="tiny-arith",
                   help="model dir, checkpoint dir, run dir, or 'tiny-arith' (the shipped warm start; default)")
    p.add_argument("--problems", type=int, default=None, help=problems_help)
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--out", type=Path, default=Path("runs/analysis"), help="output directory (default runs/analysis)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--quick", action="store_true", help="a few-second setting (tests), same code path")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--batch-size", type=int, default=None, help="(prompt, sample) rows decoded together (default 512)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="skpo analyze", description="The paper's analyses on the embedded arithmetic task."
    )
    sub = p.add_subparsers(dest="analysis", required=True, metavar="{" + ",".join(ANALYSES) + "}")
    mc = sub.add_parser(
        "mc-accuracy", help="sign accuracy / MAE of Monte Carlo advantages vs K and position (Fig. 1/8)"
    )
    _common(mc, "held-out problems, G answers each (default 24)")
    mc.add_argument("--group-size", type=int, default=None, help="answers per problem G (default 8)")
    mc.add_argument("--k-true", type=int, default=None, help="continuations for the 'true' value (default 256)")
    mc.add_argument("--k-est", type=int, default=None, help="estimation pool per (answer, prefix) (default 32)")
    mc.add_argument("--ks", default=None, help="comma-separated K values (default 1,2,4,8,16,32)")
    sc = sub.add_parser("shortcut", help="unconditional / continual / skip conditioning at six cut positions (Fig. 3)")
    _common(sc, "held-out problems, one response each (default 200)")
    sc.add_argument("--group-size", type=int, default=None, help="answers per conditioning and position G (default 8)")
    ia = sub.add_parser("implicit-advantage", help="SKPO upstream advantage vs true value change and step correctness")
    _common(ia, "held-out problems, one segment each (default 100; same as --segments)")
    ia.add_argument("--segments", type=int, default=None, help="segments, one per held-out problem (default 100)")
    ia.add_argument("--models", default=None, help="comma-separated models to compare (overrides --model)")
    ia.add_argument("--group-size", type=int, default=None, help="SKPO's G (default 8)")
    ia.add_argument("--k-true", type=int, default=None, help="continuations per true value (default 128)")
    ia.add_argument("--length", choices=("measured", "prior"), default=None,
                    help="L_q: the model's mean answer length on the problem (default) or --length-prior")
    ia.add_argument("--length-prior", type=float, default=None, help="fixed L_q for --length prior (default 32)")
    return p


def _settings(args: argparse.Namespace) -> Any:
    """The analysis settings: defaults (or ``--quick``), then every flag that was given."""
    updates: dict[str, Any] = {"seed": args.seed}
    if args.batch_size is not None:
        updates["batch_size"] = args.batch_size
    if getattr(args, "group_size", None) is not None:
        updates["group_size"] = args.group_size
    if args.analysis == "mc-accuracy":
        from skpo.analysis.mc_accuracy import McAccuracySettings as S

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
        from skpo.analysis.shortcut import ShortcutSettings as S

        if args.problems is not None:
            updates["problems"] = args.problems
    else:
        from skpo.analysis.implicit_advantage import ImplicitAdvantageSettings as S

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
    parser = _parser()
    args = parser.parse_args(argv)
    from skpo.commands.evaluate import arith_config_for, resolve_model_dir, tokenizer_dir

    started = time.perf_counter()
    models = getattr(args, "models", None)
    model_args = [m.strip() for m in models.split(",") if m.strip()] if models else [args.model]
    try:
        settings = _settings(args)
        model_dirs = [resolve_model_dir(m) for m in model_args]
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        print(f"skpo analyze: error: {e}", file=sys.stderr)
        return 2

    import torch

    from skpo.models.loading import load_policy, load_tokenizer
    from skpo.tasks.arith import ArithConfig, heldout_problems

    torch.set_num_threads(max(1, args.threads))

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", file=sys.stderr, flush=True)

    def load(model_dir: Path):
        try:
            return load_policy(model_dir, device=args.device, dtype="float32"), load_tokenizer(tokenizer_dir(model_dir))
        except (FileNotFoundError, NotADirectoryError, OSError, ValueError) as e:
            raise SystemExit(f"skpo analyze: error loading {model_dir}: {e}") from None

    config = arith_config_for(model_dirs[0]) or ArithConfig()
    n_problems = settings.segments if args.analysis == "implicit-advantage" else settings.problems
    problems = heldout_problems(config, n=n_problems)
    log(f"{args.analysis}: {len(problems)} held-out problems, model(s) {', '.join(map(str, model_dirs))}")

    if args.analysis == "mc-accuracy":
        from skpo.analysis import mc_accuracy as analysis

        model, tokenizer = load(model_dirs[0])
        results = analysis.run(model, tokenizer, problems, settings, log)
    elif args.analysis == "shortcut":
        from skpo.analysis import shortcut as analysis

        model, tokenizer = load(model_dirs[0])
        results = analysis.run(model, tokenizer, problems, settings, log)
    else:
        from skpo.analysis import implicit_advantage as analysis

        loaded = []
        for arg, model_dir in zip(model_args, model_dirs):
            model, tokenizer = load(model_dir)
            loaded.append((_label(arg), model, tokenizer))
        results = analysis.run(loaded, problems, settings, log)

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
