"""``skpo compare``: methods at an equal rollout-token budget, over seeds, with confidence intervals.

::

    skpo compare --methods skpo,grpo,dapo,cispo,spo,mc_dense,oar --seeds 5 --budget 200000 --out runs/compare
    skpo compare --methods skpo,skpo-noskip,skpo-nomc,skpo-fixedsplit,skpo-extreme --seeds 5 --budget 200000

Every run trains one method from the same starting model until it has decoded ``--budget``
rollout tokens — every token the engine decoded for it: SKPO's candidate segments (kept or
not) and answers, Monte Carlo continuations, DAPO's refill rounds, own completions — then is
evaluated on the held-out set (``--eval-problems`` × ``--k``: avg@k, pass@k, step accuracy).
Along the way it is evaluated ``--points`` times (a smaller evaluation, ``--curve-problems`` ×
``--curve-k``) for the curves of accuracy against rollout tokens and against training wall
time. The table gives the mean ± the half-width of a 95 % Student-t interval over seeds.

Methods are preset names, or variants: the SKPO ablations of the paper's Table 2 are built in
(``skpo-noskip`` ❶ continual prefix, ``skpo-nomc`` ❷ upstream reward from its own completion,
``skpo-fixedsplit`` ❸, ``skpo-extreme`` ❹), and ``--variant NAME=METHOD:key=value,key=value``
defines more. Overrides after the options apply to every run (``train.lr=1e-4``).

Resumable: each run lives in ``OUT/<method>/seed<S>/`` and checkpoints every ``--save-every``
steps; a run with a ``result.json`` is done. Run the same command again after a kill and the
sweep continues: finished runs are kept, interrupted ones resume from their last checkpoint
(the resumed run is step-for-step the one that would have run), missing ones start. Runs go
``--jobs`` at a time, each a process with one torch thread.

Outputs: ``OUT/compare.json`` (settings, command, every run's result, the summary),
``OUT/compare.md`` (the table), ``OUT/compare.png`` (the curves).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from skpo.analysis.compare import plot_comparison, summarize
from skpo.commands.parsers import compare_parser
from skpo.config import ConfigError, load_config
from skpo.jsonl import read_jsonl
from skpo.methods import METHODS, sizes_that_apply
from skpo.training.benchmarks import evaluate_benchmarks
from skpo.training.checkpoint import latest_checkpoint
from skpo.training.setup import build_trainer

ABLATIONS: dict[str, tuple[str, list[str]]] = {
    "skpo-noskip": ("skpo", ["method.rollout_params.skip=false"]),
    "skpo-nomc": ("skpo", ["method.rollout_params.upstream_reward=own"]),
    "skpo-fixedsplit": ("skpo", ["method.rollout_params.split=fixed"]),
    "skpo-extreme": ("skpo", ["method.rollout_params.selection=extreme"]),
}
FINAL_METRICS = ("avg@k", "pass@k", "maj@k", "step_accuracy", "tokens", "steps", "train_seconds", "dead_end_first_moves")


def resolve_methods(methods: str, variants: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Label → (preset, overrides) for every requested method or variant."""
    table = dict(ABLATIONS)
    for v in variants:
        name, sep, rest = v.partition("=")
        method, _, kvs = rest.partition(":")
        if not sep or not name or not method:
            raise ValueError(f"--variant {v!r}: expected NAME=METHOD:key=value,key=value")
        table[name] = (method, [kv for kv in kvs.split(",") if kv])
    out: dict[str, tuple[str, list[str]]] = {}
    for label in [m.strip() for m in methods.split(",") if m.strip()]:
        if label in table:
            out[label] = table[label]
        elif label in METHODS:
            out[label] = (label, [])
        else:
            raise ValueError(f"unknown method {label!r}; presets: {', '.join(sorted(METHODS))}; variants: {', '.join(sorted(table))}")
        if out[label][0] not in METHODS:
            raise ValueError(f"variant {label!r}: unknown method {out[label][0]!r}")
    if not out:
        raise ValueError("--methods is empty")
    return out


def run_specs(args: argparse.Namespace, methods: dict[str, tuple[str, list[str]]], out: Path) -> list[dict[str, Any]]:
    specs = []
    for label, (method, extra) in methods.items():
        for seed in range(1, args.seeds + 1):
            run_dir = out / label / f"seed{seed}"
            every_tokens = max(1, args.budget // max(1, args.points))
            overrides = [
                f"train.method={method}", *extra,
                *(sizes_that_apply(method, 4, k=2, max_steps=2) if getattr(args, "quick", False) else []),
                *args.overrides, f"train.seed={seed}", f"train.token_budget={args.budget}",
                f"train.steps={args.max_steps}", "eval.every=0", f"eval.every_tokens={every_tokens}",
                f"eval.benchmarks=[{','.join(args.benchmarks)}]",
                f"eval.limit={args.curve_problems}", f"eval.k={args.curve_k}", f"log.out_dir={run_dir}",
                f"log.save_every={args.save_every}", "log.keep_checkpoints=1", "log.progress=false", "log.tensorboard=false",
            ]
            specs.append({"label": label, "method": method, "seed": seed, "run_dir": str(run_dir), "config": args.config,
                          "overrides": overrides, "eval_problems": args.eval_problems, "k": args.k,
                          "curve_problems": args.curve_problems, "curve_k": args.curve_k})
    return specs


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one method × seed to the budget (resuming when a checkpoint exists), evaluate, and
    write ``result.json``."""
    torch.set_num_threads(1)
    run_dir = Path(spec["run_dir"])
    result_path = run_dir / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    cfg = load_config(spec["config"], spec["overrides"])
    resume = run_dir.is_dir() and latest_checkpoint(run_dir) is not None
    # an interrupted run with no checkpoint starts over (its files cleared, nothing else)
    trainer = build_trainer(cfg, resume=resume, overwrite=not resume and (run_dir / "run.json").is_file())
    assert cfg.eval.benchmarks is not None  # (filled in when the config is validated)
    k_c, benchmarks = spec["curve_k"], list(cfg.eval.benchmarks)

    def evaluate(k: int, limit: int) -> dict[str, dict[str, Any]]:
        return evaluate_benchmarks(trainer.policy, trainer.tokenizer, cfg, trainer.actor.autocast_dtype, k=k, limit=limit,
                                   source=trainer.source)

    start_path = run_dir / "start_eval.json"
    if not start_path.is_file():
        start = evaluate(k_c, spec["curve_problems"])
        start_path.write_text(json.dumps({"avg": _mean(r["metrics"][f"avg@{k_c}"] for r in start.values())}))
    trainer.train()
    final = evaluate(spec["k"], spec["eval_problems"])
    k = spec["k"]
    curve = [{"tokens": 0, "seconds": 0.0, "step": 0, f"avg@{k_c}": json.loads(start_path.read_text())["avg"]}]
    for _, row in read_jsonl(run_dir / "metrics.jsonl", what="metrics file"):
        keys = [f"eval/{b}/avg@{k_c}" for b in final]
        if all(key in row for key in keys):
            curve.append({"tokens": row["tokens/seen"], "seconds": row["time/train_elapsed"], "step": row["step"],
                          f"avg@{k_c}": _mean(row[key] for key in keys)})
    result = {
        "method": spec["label"], "preset": spec["method"], "seed": spec["seed"], "overrides": spec["overrides"],
        "benchmarks": benchmarks, "k": k, "eval_problems": spec["eval_problems"],
        **{m: _mean(r["metrics"][f"{m[:-2]}@{k}"] for r in final.values()) for m in ("avg@k", "pass@k", "maj@k")},
        "per_benchmark": {name: r["metrics"] for name, r in final.items()},
        "tokens": trainer.state.tokens_seen, "steps": trainer.state.step, "train_seconds": trainer.state.train_seconds,
        "curve_metric": f"avg@{k_c}", "curve": curve,
    }
    step_metrics = [r["step_metrics"]["step_accuracy"] for r in final.values() if "step_accuracy" in r.get("step_metrics", {})]
    if step_metrics:  # the synthetic task's exact step checks
        result["step_accuracy"] = _mean(step_metrics)
    dead_ends = [r["move_metrics"]["first_move_shares"]["dead_end"] for r in final.values() if "move_metrics" in r]
    if dead_ends:  # countdown: the share of samples whose first move leaves the target unreachable
        result["dead_end_first_moves"] = _mean(dead_ends)
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, result_path)
    return result


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _run_pending(specs: list[dict[str, Any]], jobs: int) -> list[str]:
    """Run the specs without a result, ``jobs`` processes at a time; returns failures."""
    pending = [s for s in specs if not (Path(s["run_dir"]) / "result.json").is_file()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running: list[tuple[subprocess.Popen, dict[str, Any], Any]] = []
    failures: list[str] = []
    try:
        while pending or running:
            while pending and len(running) < max(1, jobs):
                spec = pending.pop(0)
                log_path = Path(spec["run_dir"]).parent / f"{Path(spec['run_dir']).name}.log"
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log = open(log_path, "a")  # noqa: SIM115 - closed when its process ends
                cmd = [sys.executable, "-m", "skpo.commands.compare", "--one", json.dumps(spec)]
                running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), spec, log))
                print(f"start {spec['label']} seed {spec['seed']}", flush=True)
            time.sleep(0.5)
            for proc, spec, log in list(running):
                if proc.poll() is not None:
                    log.close()
                    running.remove((proc, spec, log))
                    status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}; see {Path(spec['run_dir']).parent / (Path(spec['run_dir']).name + '.log')})"
                    if proc.returncode != 0:
                        failures.append(f"{spec['label']} seed {spec['seed']}")
                    print(f"{status}: {spec['label']} seed {spec['seed']}", flush=True)
    finally:
        for proc, _, log in running:  # interrupted: stop the children; their checkpoints stay
            proc.terminate()
            proc.wait()
            log.close()
    return failures


def aggregate(out: Path, specs: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    results = [json.loads((Path(s["run_dir"]) / "result.json").read_text()) for s in specs
               if (Path(s["run_dir"]) / "result.json").is_file()]
    summary = summarize(results, FINAL_METRICS)
    report = {"settings": settings, "summary": summary, "runs": results}
    (out / "compare.json").write_text(json.dumps(report, indent=1))
    k = settings["k"]
    moves = any("dead_end_first_moves" in row for row in summary.values())  # countdown runs: one more column
    lines = [f"Held-out {', '.join(settings['benchmarks'])} (mean over them), {settings['eval_problems']} problems × {k} "
             f"samples, after {settings['budget']:,} "
             "decoded rollout tokens per run; mean ± 95 % t-interval over seeds.", "",
             f"| method | seeds | avg@{k} | pass@{k} | maj@{k} | step accuracy | steps | train s |"
             + (" dead-end first moves |" if moves else ""), "|---|---|---|---|---|---|---|---|" + ("---|" if moves else "")]

    def cell(row: dict[str, Any], m: str, fmt: str) -> str:
        if m not in row:
            return "–"
        mean, ci = row[m]["mean"], row[m]["ci95"]
        return format(mean, fmt) + ("" if ci is None else " ± " + format(ci, fmt))

    for method, row in summary.items():
        lines.append(f"| {method} | {row['n']} | {cell(row, 'avg@k', '.3f')} | {cell(row, 'pass@k', '.3f')} | "
                     f"{cell(row, 'maj@k', '.3f')} | {cell(row, 'step_accuracy', '.3f')} | {cell(row, 'steps', '.0f')} | "
                     f"{cell(row, 'train_seconds', '.0f')} |"
                     + (f" {cell(row, 'dead_end_first_moves', '.3f')} |" if moves else ""))
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    if results:
        metric = results[0].get("curve_metric", "avg@4")
        plot_comparison(results, out / "compare.png", metric=metric,
                        title=f"equal budget of {settings['budget']:,} rollout tokens")
    return report


def main(argv: list[str]) -> int:
    args = compare_parser().parse_intermixed_args(argv)  # options may follow key=value overrides
    if args.one is not None:
        run_one(json.loads(args.one))
        return 0
    if args.quick:
        args.seeds, args.budget, args.eval_problems, args.k = min(args.seeds, 2), 1500, 10, 2
        args.points, args.curve_problems, args.curve_k, args.save_every = 2, 5, 2, 2
        args.overrides = ["train.prompts_per_step=4", *args.overrides]  # (and each method's small sizes: run_specs)
    try:
        methods = resolve_methods(args.methods, args.variant)
        if args.seeds < 1 or args.budget < 1:
            raise ValueError("--seeds and --budget must be >= 1")
        base = load_config(args.config, args.overrides)  # bad overrides fail before any run starts
        assert base.eval.benchmarks is not None  # (filled in when the config is validated)
        args.benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()] if args.benchmarks \
            else list(base.eval.benchmarks)
        if not args.benchmarks:
            raise ValueError("--benchmarks is empty")
        load_config(args.config, [*args.overrides, f"eval.benchmarks=[{','.join(args.benchmarks)}]"])
    except (ValueError, ConfigError) as err:
        print(f"skpo compare: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    specs = run_specs(args, methods, out)
    settings = {"command": ["skpo", "compare", *argv], "methods": {k: list(v) for k, v in methods.items()},
                "seeds": args.seeds, "budget": args.budget, "config": args.config, "overrides": args.overrides,
                "benchmarks": args.benchmarks,
                "eval_problems": args.eval_problems, "k": args.k, "curve_problems": args.curve_problems,
                "curve_k": args.curve_k, "points": args.points}
    started = time.perf_counter()
    failures = [] if args.summary_only else _run_pending(specs, args.jobs)
    report = aggregate(out, specs, {**settings, "wall_seconds": round(time.perf_counter() - started, 1)})
    print((out / "compare.md").read_text())
    print(f"wrote {out / 'compare.json'}, {out / 'compare.md'}, {out / 'compare.png'}")
    if failures:
        print(f"skpo compare: {len(failures)} run(s) failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0 if report["runs"] else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
