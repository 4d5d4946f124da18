"""``skpo warmstart``: the supervised warm start of the tiny model on the synthetic task
(:mod:`skpo.commands.warmstart_training` runs it; this module parses the command line without importing
the training stack)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from skpo.tasks.arith import ArithConfig
from skpo.commands.warmstart_config import WarmstartConfig

DESCRIPTION = "Warm-start the tiny model by supervised fine-tuning on the synthetic task (plain and skip-format examples)."


def _parser() -> argparse.ArgumentParser:
    d, t = WarmstartConfig, ArithConfig()  # the class's defaults (no model config is built)
    p = argparse.ArgumentParser(prog="skpo warmstart", description=DESCRIPTION)
    p.add_argument("--out", type=Path, required=True, help="output directory (created)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--init", default=None,
                   help="continue from this saved model ('tiny-arith' = the shipped one) instead of a fresh tiny model")
    p.add_argument("--steps", type=int, default=None,
                   help=f"most optimizer steps; the LR schedule spans them (default {d.steps} without --minutes)")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget (not bit-reproducible)")
    p.add_argument("--target-avg", type=float, default=d.target_avg,
                   help="stop once validation plain avg@k reaches this (a negative value: never)")
    p.add_argument("--check-every", type=int, default=d.check_every, help=f"validation every N steps (0: never; default {d.check_every})")
    p.add_argument("--val-problems", type=int, default=d.val_problems)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--mix", type=float, nargs=3, default=list(d.mix), metavar=("PLAIN", "SKIP_OK", "SKIP_FLAWED"))
    p.add_argument("--min-ops", type=int, default=t.min_ops)
    p.add_argument("--max-ops", type=int, default=t.max_ops)
    p.add_argument("--min-operand", type=int, default=t.min_operand)
    p.add_argument("--max-operand", type=int, default=t.max_operand)
    p.add_argument("--operators", default="".join(t.operators), help="e.g. '+-' or '+-*'")
    p.add_argument("--allow-negative", action="store_true", default=t.allow_negative)
    p.add_argument("--max-abs-result", type=int, default=t.max_abs_result)
    p.add_argument("--eval-problems", type=int, default=200, help="held-out problems (0: skip evaluation)")
    p.add_argument("--eval-k", type=int, default=8)
    p.add_argument("--log-every", type=int, default=100)
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    task = ArithConfig(
        min_ops=args.min_ops,
        max_ops=args.max_ops,
        min_operand=args.min_operand,
        max_operand=args.max_operand,
        operators=tuple(args.operators),
        allow_negative=args.allow_negative,
        max_abs_result=args.max_abs_result,
    )
    steps = args.steps if (args.steps is not None or args.minutes is not None) else WarmstartConfig.steps
    config = WarmstartConfig(
        seed=args.seed,
        steps=steps,
        minutes=args.minutes,
        target_avg=None if args.target_avg < 0 else args.target_avg,
        check_every=args.check_every,
        val_problems=args.val_problems,
        batch_size=args.batch_size,
        lr=args.lr,
        mix=tuple(args.mix),
        threads=args.threads,
        task=task,
        init=args.init,
    )
    from skpo.tasks.arith import heldout_problems
    from skpo.commands.warmstart_training import evaluate_all, save, train

    result = train(config, log_every=args.log_every)
    print(f"trained {result.steps} steps in {result.seconds:.0f}s"
          + (f" (validation target {config.target_avg} reached)" if result.reached_target else ""))
    metrics: dict[str, object] = {}
    if args.eval_problems > 0:
        t0 = time.perf_counter()
        problems = heldout_problems(task, args.eval_problems)
        metrics = evaluate_all(result.model, result.tokenizer, problems, k=args.eval_k)
        metrics["eval_seconds"] = round(time.perf_counter() - t0, 1)
        for name in ("plain", "skip_correct_draft", "skip_flawed_draft"):
            m = metrics[name]
            print(f"{name:>20}: avg@{args.eval_k} {m['avg_at_k']:.3f}  pass@{args.eval_k} {m['pass_at_k']:.3f}  "
                  f"mixed {m['frac_mixed']:.3f}  histogram {m['histogram']}")
    save(result, config, args.out, metrics)
    print(f"saved to {args.out}")
    return 0
