"""Train every method preset for the same short run on the embedded default and print a
table of held-out accuracy before/after (one seed; a smoke comparison, not a benchmark).

    python scripts/preset_table.py --steps 10 --out runs/preset-table
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--eval-problems", type=int, default=100)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--out", default="runs/preset-table")
    p.add_argument("--methods", default="")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()

    from skpo.config import load_config
    from skpo.methods import METHODS
    from skpo.training.benchmarks import evaluate_heldout
    from skpo.training.setup import build_trainer

    methods = [m for m in args.methods.split(",") if m] or sorted(METHODS)
    rows, before = [], None
    for method in methods:
        cfg = load_config(None, [f"train.method={method}", f"train.steps={args.steps}", f"log.out_dir={args.out}/{method}",
                                 "log.progress=false", *args.overrides])
        trainer = build_trainer(cfg)
        if before is None:
            before = evaluate_heldout(trainer.policy, trainer.tokenizer, cfg, k=args.k, num_problems=args.eval_problems)["metrics"]
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
        after = evaluate_heldout(trainer.policy, trainer.tokenizer, cfg, k=args.k, num_problems=args.eval_problems)["metrics"]
        lines = [json.loads(x) for x in (Path(cfg.log.out_dir) / "metrics.jsonl").read_text().splitlines()]
        tokens = sum(x.get("tokens/decoded", 0) for x in lines)
        rows.append((method, after[f"avg@{args.k}"], after[f"pass@{args.k}"], seconds / args.steps, tokens / args.steps))
        print(f"{method}: avg@{args.k} {after[f'avg@{args.k}']:.3f}", flush=True)
    print(f"\nwarm start: avg@{args.k} {before[f'avg@{args.k}']:.3f}  pass@{args.k} {before[f'pass@{args.k}']:.3f}")
    print(f"| method | avg@{args.k} | pass@{args.k} | s/step | decoded tokens/step |")
    print("|---|---|---|---|---|")
    for m, a, pk, s, tok in rows:
        print(f"| {m} | {a:.3f} | {pk:.3f} | {s:.1f} | {tok:.0f} |")


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
