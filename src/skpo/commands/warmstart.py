"""``skpo warmstart``: the supervised warm start of the tiny model on the synthetic task
(:mod:`skpo.commands.warmstart_training` runs it; this module parses the command line without importing
the training stack)."""

from __future__ import annotations

import time
from typing import Any

from skpo.commands.parsers import warmstart_parser
from skpo.commands.warmstart_config import WarmstartConfig
from skpo.commands.warmstart_training import evaluate_all, save, train
from skpo.tasks import countdown
from skpo.tasks.arith import ArithConfig, heldout_problems
from skpo.tasks.countdown import CountdownConfig


def main(argv: list[str]) -> int:
    args = warmstart_parser().parse_args(argv)
    task: ArithConfig | CountdownConfig
    if args.task == "countdown":
        task = CountdownConfig(
            min_numbers=args.min_numbers, max_numbers=args.max_numbers, min_number=args.min_number,
            max_number=args.max_number, min_target=args.min_target, max_target=args.max_target,
            operators=tuple(args.operators or CountdownConfig.operators), max_intermediate=args.max_intermediate,
        )
    else:
        task = ArithConfig(
            min_ops=args.min_ops,
            max_ops=args.max_ops,
            min_operand=args.min_operand,
            max_operand=args.max_operand,
            operators=tuple(args.operators or ArithConfig.operators),
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
    result = train(config, log_every=args.log_every)
    print(f"trained {result.steps} steps in {result.seconds:.0f}s"
          + (f" (validation target {config.target_avg} reached)" if result.reached_target else ""))
    metrics: dict[str, Any] = {}
    if args.eval_problems > 0:
        t0 = time.perf_counter()
        if isinstance(task, CountdownConfig):
            problems: list = countdown.heldout_problems(task, args.eval_problems)
            metrics = evaluate_all(result.model, result.tokenizer, problems, k=args.eval_k, task=task)
        else:
            problems = heldout_problems(task, args.eval_problems)
            metrics = evaluate_all(result.model, result.tokenizer, problems, k=args.eval_k)
        metrics["eval_seconds"] = round(time.perf_counter() - t0, 1)
        for name in ("plain", "skip_correct_draft", "skip_flawed_draft"):
            m = metrics[name]
            print(f"{name:>20}: avg@{args.eval_k} {m['avg_at_k']:.3f}  pass@{args.eval_k} {m['pass_at_k']:.3f}  "
                  f"mixed {m['frac_mixed']:.3f}  histogram {m['histogram']}")
            if m.get("move_metrics"):
                shares = m["move_metrics"]["first_move_shares"]
                print(f"{'':>20}  first moves: " + ", ".join(f"{k} {v:.3f}" for k, v in shares.items()))
    save(result, config, args.out, metrics)
    print(f"saved to {args.out}")
    return 0
