"""``skpo main``: the README's first command.

Trains SKPO on the embedded default (the shipped warm-started tiny Qwen2 on held-in
chained-arithmetic problems), evaluates the warm start and the trained policy on the same
fixed held-out set with the same seed, plots the learning curves, and writes a summary.
Running it again replaces its previous run (``--resume`` continues that run instead; the warm
start's evaluation is kept in ``main_before.json``); a directory that is not a run is never
cleared. User errors are one line with exit status 2, like ``skpo train``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from skpo.analysis.plots import plot_runs
from skpo.commands.parsers import main_job_parser
from skpo.config import load_config
from skpo.errors import run_command
from skpo.training.benchmarks import evaluate_heldout
from skpo.training.setup import build_trainer, load_run_model


def main(argv: list[str]) -> int:
    return run_command("main", _main, argv)


def _main(argv: list[str]) -> int:
    args = main_job_parser().parse_intermixed_args(argv)  # options may follow key=value overrides
    console = Console()
    cfg = load_config(args.config, args.overrides)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    assert cfg.log.out_dir is not None  # (filled in when the config is validated)
    run_dir = Path(cfg.log.out_dir)
    console.print(f"[bold]skpo main[/]: {cfg.train.method} on the embedded default → {run_dir}")

    overwrite = args.overwrite or not args.resume
    if overwrite and (run_dir / "run.json").is_file():
        console.print(f"replacing the previous run in {run_dir}")
    trainer = build_trainer(cfg, resume=args.resume, overwrite=overwrite)
    before_path = run_dir / "main_before.json"
    kept = json.loads(before_path.read_text()) if args.resume and before_path.is_file() else None
    if kept is not None and kept.get("k") == args.k and kept.get("problems") == args.eval_problems:
        before, t_eval = kept["before"], kept["seconds"]
    else:
        # resumed: the policy is no longer the warm start, so evaluate a fresh copy of it
        start = load_run_model(cfg) if args.resume else trainer.policy
        t0 = time.perf_counter()
        full = evaluate_heldout(start, trainer.tokenizer, cfg, k=args.k, num_problems=args.eval_problems)
        t_eval = time.perf_counter() - t0
        before = {key: full[key] for key in ("metrics", "step_metrics", "success_histogram") if key in full}
        before_path.write_text(json.dumps({"k": args.k, "problems": args.eval_problems, "seconds": t_eval,
                                           "before": before}))
    t0 = time.perf_counter()
    trainer.train()
    t_train = time.perf_counter() - t0
    after = evaluate_heldout(trainer.policy, trainer.tokenizer, cfg, k=args.k, num_problems=args.eval_problems)
    plot = plot_runs([run_dir], run_dir / "curves.png")

    k = args.k
    rows = [(f"avg@{k}", f"avg@{k}"), ("pass@1", "pass@1"), (f"pass@{k}", f"pass@{k}"), (f"maj@{k}", f"maj@{k}")]
    table = Table(title=f"held-out arithmetic ({args.eval_problems} problems × {k} samples, T={cfg.eval.temperature})")
    table.add_column("metric")
    table.add_column("warm start", justify="right")
    table.add_column(f"after {cfg.train.steps} steps", justify="right")
    for label, key in rows:
        table.add_row(label, f"{before['metrics'][key]:.3f}", f"{after['metrics'][key]:.3f}")
    sb, sa = before.get("step_metrics", {}), after.get("step_metrics", {})
    if "step_accuracy" in sb:
        table.add_row("step accuracy", f"{sb['step_accuracy']:.3f}", f"{sa['step_accuracy']:.3f}")
    console.print(table)
    summary = {
        "method": cfg.train.method,
        "steps": cfg.train.steps,
        "train_seconds": round(t_train, 1),
        "eval_seconds_each": round(t_eval, 1),
        "before": before["metrics"],
        "after": after["metrics"],
        "before_step_metrics": sb,
        "after_step_metrics": sa,
        "before_histogram": before.get("success_histogram"),
        "after_histogram": after.get("success_histogram"),
    }
    (run_dir / "main_summary.json").write_text(json.dumps(summary, indent=1))
    gain = after["metrics"][f"avg@{k}"] - before["metrics"][f"avg@{k}"]
    console.print(
        f"avg@{k}: {before['metrics'][f'avg@{k}']:.3f} → {after['metrics'][f'avg@{k}']:.3f} ({gain:+.3f}); "
        f"training {t_train / 60:.1f} min; curves: {plot}; summary: {run_dir / 'main_summary.json'}"
    )
    return 0
