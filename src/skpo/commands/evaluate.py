"""``skpo eval``: evaluate a model directory or a training checkpoint on benchmarks.

::

    skpo eval --model DIR_OR_CHECKPOINT --benchmarks arith,math500 --k 8 --limit 50 --out results.json
    skpo eval --model runs/X --data ~/data/gsm8k/test.parquet      # a data file, read as training reads it

``--model`` accepts (see :func:`resolve_model_dir`):

- any local Hugging Face model directory (``config.json`` + weights + tokenizer files);
- a training checkpoint directory ``runs/X/checkpoints/step_000050/`` holding the model in a
  ``model/`` subfolder;
- a run directory ``runs/X/`` with a ``checkpoints/`` folder: its newest intact checkpoint
  (each verified against its manifest; a damaged one is passed over with a warning naming
  both);
- the literal ``tiny-arith``: the shipped warm-started tiny model.

Prints a ``rich`` table (benchmark, n, avg@k, pass@1, pass@k, maj@k) and writes the full results
as JSON (format in ``docs/evaluation.md``). The ``arith`` benchmark uses the task difficulty
recorded in the model directory's ``warmstart.json`` when there is one, else the default.
A checkpoint is verified (sizes and SHA-256 of its manifest) before it is loaded. Errors the
user can fix are one line ``skpo eval: …`` with exit status 2. SIGINT/SIGTERM stop the evaluation
after the engine batch in flight: one line, nothing written, exit status 128 + the signal.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from skpo.commands.parsers import evaluate_parser
from skpo.errors import EvaluationInterrupted, UserError, log_to_console, run_command
from skpo.evaluation.benchmarks import BenchmarkSpec, data_file_spec, load_problems, load_spec_file, resolve_benchmarks
from skpo.evaluation.runner import EvalSettings, evaluate
from skpo.models.loading import load_policy, load_tokenizer, shipped_model_dir
from skpo.tasks.arith import ArithConfig
from skpo.tasks.countdown import CountdownConfig
from skpo.training.checkpoint import find_checkpoint, verify_checkpoint
from skpo.training.run_dir import read_run_json
from skpo.training.signals import StopOnSignals


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve_model_dir(arg: str) -> Path:
    """The Hugging Face model directory that ``--model`` designates.

    Order: ``tiny-arith`` → the shipped checkpoint; a directory with ``config.json`` → itself;
    a directory with ``model/config.json`` → ``model/``; a directory with ``checkpoints/step_*``
    → the newest intact checkpoint's model (of the run in ``run.json``). A training checkpoint
    is verified against its manifest before its path is returned.

    Raises:
        FileNotFoundError: naming the path (or what was looked for) when nothing fits.
        CheckpointError: the checkpoint named is damaged, or no checkpoint of the run is intact.
    """
    if (path := shipped_model_dir(arg)) is not None:
        if not _is_model_dir(path):
            raise FileNotFoundError(
                f"the shipped tiny model is not at {path}; produce it with `skpo warmstart --out {path}`"
            )
        return path
    path = Path(arg).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model path {str(path)!r} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"model path {str(path)!r} is not a directory")
    if _is_model_dir(path):
        if (path.parent / "manifest.json").is_file():  # CHECKPOINT/model
            verify_checkpoint(path.parent)
        return path
    if _is_model_dir(path / "model"):
        if (path / "manifest.json").is_file():
            verify_checkpoint(path)
        return path / "model"
    checkpoints = path / "checkpoints"
    steps = sorted((p for p in checkpoints.glob("step_*") if p.is_dir()), key=lambda p: p.name) if checkpoints.is_dir() else []
    if any((step / "manifest.json").is_file() for step in steps):  # a training run's checkpoints
        step, _ = find_checkpoint(path, run_id=read_run_json(path).get("run_id"))  # warns on each passed over
        if _is_model_dir(step / "model"):
            return step / "model"
    for step in reversed(steps):  # step_* folders laid out by hand or another tool: nothing to verify
        if _is_model_dir(step / "model"):
            return step / "model"
        if _is_model_dir(step):
            return step
    raise FileNotFoundError(
        f"{str(path)!r} is not a model directory: no config.json in it, in {str(path / 'model')!r}, "
        f"or in a checkpoints/step_*/model folder"
    )


def tokenizer_dir(model_dir: Path) -> Path:
    """Where the tokenizer lives: the model directory, else its parent (a checkpoint dir)."""
    for candidate in (model_dir, model_dir.parent):
        if any((candidate / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
            return candidate
    return model_dir  # load_tokenizer's error then names it


def task_config_for(model_dir: Path) -> ArithConfig | CountdownConfig | None:
    """The task the model was warm-started on (``warmstart.json``: ``task_name``, absent for
    arithmetic, and the task's settings), if recorded."""
    for candidate in (model_dir, model_dir.parent):
        record = candidate / "warmstart.json"
        if record.is_file():
            saved = json.loads(record.read_text())
            task = saved.get("config", {}).get("task")
            if isinstance(task, dict):
                task = dict(task)
                if "operators" in task:
                    task["operators"] = tuple(task["operators"])
                return CountdownConfig(**task) if saved.get("task_name") == "countdown" else ArithConfig(**task)
    return None


def arith_config_for(model_dir: Path) -> ArithConfig | None:
    """The arithmetic difficulty the model was warm-started on (``warmstart.json``), if recorded."""
    task = task_config_for(model_dir)
    return task if isinstance(task, ArithConfig) else None


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def results_table(results: dict[str, dict[str, Any]]):
    """A ``rich`` table: benchmark, n, avg@k, pass@1, pass@k, maj@k."""
    table = Table(title="skpo eval")
    for col in ("benchmark", "n", "k", "avg@k", "pass@1", "pass@k", "maj@k"):
        table.add_column(col, justify="left" if col == "benchmark" else "right")
    for name, res in results.items():
        m, k = res["metrics"], res["k"]
        table.add_row(
            name, str(res["n_problems"]), str(k), _fmt(m[f"avg@{k}"]), _fmt(m["pass@1"]), _fmt(m[f"pass@{k}"]),
            _fmt(m[f"maj@{k}"]),
        )
    return table


def main(argv: list[str]) -> int:
    return run_command("eval", _main, argv)


class _EvalError(UserError, ValueError):
    """A bad ``skpo eval`` argument or a model/benchmark that cannot be used."""


def _main(argv: list[str]) -> int:
    args = evaluate_parser().parse_args(argv)
    log_to_console(logging.WARNING)  # e.g. a damaged checkpoint passed over

    try:
        extra: dict[str, BenchmarkSpec] = {}
        for spec_file in args.spec:
            for spec in load_spec_file(spec_file):
                extra[spec.name] = spec
        for data in args.data:  # the training data spec: columns found as for data.path
            if not Path(data).expanduser().exists():
                raise FileNotFoundError(f"--data: {data!r} does not exist")
            spec = data_file_spec(data)
            if spec.name in extra:  # two files with one stem: tell them apart by their folder
                spec = spec.model_copy(update={"name": f"{Path(data).expanduser().resolve().parent.name}-{spec.name}"})
            extra[spec.name] = spec
        if args.benchmarks is None:  # the model's own task (a countdown warm start: countdown)
            names = [] if extra else [
                "countdown" if isinstance(task_config_for(resolve_model_dir(args.model)), CountdownConfig) else "arith"]
        else:
            names = [n.strip() for n in args.benchmarks.split(",") if n.strip()]
            if not names:
                raise ValueError("--benchmarks is empty")
        for spec in extra.values():
            if spec.name not in names:
                names.append(spec.name)
        specs = resolve_benchmarks(names, extra)
        if args.max_prompt_tokens is not None:
            specs = [s.model_copy(update={"max_prompt_tokens": args.max_prompt_tokens}) for s in specs]
        if args.k < 1:
            raise ValueError(f"--k must be >= 1, got {args.k}")
        for spec in specs:  # every file read and checked (the reward's columns too) before the model loads
            if spec.path is not None:
                load_problems(spec, args.limit)
        model_dir = resolve_model_dir(args.model)
    except (KeyError, ValueError) as e:  # unknown benchmark, bad spec or argument (DatasetError is a ValueError)
        if isinstance(e, UserError):
            raise
        raise _EvalError(e.args[0] if isinstance(e, KeyError) else str(e)) from e

    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("float32" if torch.device(device).type == "cpu" else None)
    try:
        model = load_policy(model_dir, device=device, dtype=dtype)
        tokenizer = load_tokenizer(tokenizer_dir(model_dir))
    except (OSError, ValueError) as e:  # transformers: unreadable config or weights
        if isinstance(e, UserError):
            raise
        raise _EvalError(f"cannot load {model_dir}: {e}") from e
    task = task_config_for(model_dir)
    if isinstance(task, ArithConfig):
        specs = [s.model_copy(update={"arith": task}) if s.verifier == "arith" and s.arith is None else s for s in specs]
    elif isinstance(task, CountdownConfig):
        specs = [s.model_copy(update={"countdown": task}) if s.synthetic == "countdown" and s.countdown is None else s
                 for s in specs]
    chat = {"auto": None, "on": True, "off": False}[args.chat_template]
    settings = EvalSettings(k=args.k, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                            limit=args.limit, seed=args.seed, batch_size=args.batch_size, use_chat_template=chat,
                            save_samples=args.save_samples, progress=not args.no_progress)

    results: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    # SIGINT/SIGTERM stop the evaluation after the batch in flight, with one line and 128 + the signal
    with StopOnSignals(doing="stopping after the batch in flight; nothing is written") as signals:
        for spec in specs:
            try:
                results[spec.name] = evaluate(model, tokenizer, spec, settings,
                                              should_stop=lambda: signals.signum is not None)
            except EvaluationInterrupted as e:
                assert signals.signum is not None
                raise EvaluationInterrupted(f"stopped by {signal.Signals(signals.signum).name}: {e}; nothing written",
                                            signals.signum) from None
            except (FileNotFoundError, ValueError) as e:
                raise _EvalError(f"{spec.name}: {e}") from e
    report = {
        "model": str(model_dir),
        "model_arg": args.model,
        "command": ["skpo", "eval", *argv],
        "device": device,
        "seconds": round(time.perf_counter() - started, 3),
        "benchmarks": results,
    }
    Console().print(results_table(results))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
