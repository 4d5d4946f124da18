"""An SKPO training step against a GRPO step in skpo, at equal G and equal maximum lengths
(a script, not a test).

Both trainers start from the shipped tiny model with the embedded recipe (16 prompts ×
G = 8, answers of at most 64 tokens, one optimizer step per training step) and differ only in
``train.method``. Steps are interleaved (GRPO, SKPO, GRPO, …; the first ``--warmup`` of each
dropped) and the table reports medians of:

- generation time, split for SKPO into the upstream phase (G candidate segments per prompt,
  cut at the split point) and the downstream phase (G answers from ``[s, q]``);
- scoring (the task checker), update (forward + backward + optimizer) and everything else;
- token counts: decoded (segments + answers), prefilled (prompt tokens encoded, each
  distinct prompt of a call once), trained (response tokens in the loss; SKPO's upstream
  segments apart) and "update forward" (real tokens the update's forward/backward runs
  over: prompts once per packed group, plus responses);
- sequential decode steps of each engine call (its longest completion): on a CPU a decode
  step costs a fixed ~3 ms plus a little per row, so steps explain much of the time.

    python benchmarks/skpo_vs_grpo.py --reps 8
    python benchmarks/skpo_vs_grpo.py --reps 8 rollout.max_new_tokens=128   # any override
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import _bench


def build(method: str, out: str, overrides: list[str]):
    from skpo.config import load_config
    from skpo.training.setup import build_trainer

    cfg = load_config(None, [
        f"train.method={method}", "model.device=cpu", "eval.every=0", "log.progress=false",
        "log.tensorboard=false", f"log.out_dir={out}", *overrides,
    ])
    trainer = build_trainer(cfg)
    calls: list[tuple[float, int]] = []
    generate = trainer.engine.generate

    def timed_generate(*a, **k):  # one entry per engine call: SKPO makes two (segments, answers)
        t0 = time.perf_counter()
        out = generate(*a, **k)
        steps = max((len(c.token_ids) for row in out for c in row), default=0)  # sequential decode steps
        calls.append((time.perf_counter() - t0, steps))
        return out

    trainer.engine.generate = timed_generate
    return trainer, calls


def one_step(trainer, calls) -> dict[str, float]:
    calls.clear()
    t0 = time.perf_counter()
    m = trainer.train_step(trainer.state.step)
    wall = time.perf_counter() - t0
    trainer.state.step += 1
    rows = {"step": wall, "upstream gen": calls[0][0] if len(calls) == 2 else 0.0, "answer gen": calls[-1][0],
            "scoring": m.get("time/scoring", 0.0), "update": m["time/update"] + m.get("time/old_log_probs", 0.0)}
    rows["other"] = wall - sum(v for k, v in rows.items() if k != "step")
    up = m.get("upstream/segment_length", 0.0) * trainer.cfg.train.prompts_per_step
    rows.update({
        "decoded": m["tokens/decoded"], "prefill": m.get("tokens/prefill", 0.0), "trained": m["tokens/trained"],
        "trained upstream": up, "update forward": m.get("tokens/update_real", 0.0),
        "upstream decode steps": calls[0][1] if len(calls) == 2 else 0, "answer decode steps": calls[-1][1],
    })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("overrides", nargs="*", help="config overrides applied to both (key=value)")
    args = ap.parse_args()
    _bench.set_threads(args.threads)
    warnings.filterwarnings("ignore")
    tmp = tempfile.mkdtemp(prefix="skpo-vs-grpo-")
    sides = {m: build(m, f"{tmp}/{m}", args.overrides) for m in ("grpo", "skpo")}
    rec: dict[str, list[dict[str, float]]] = {m: [] for m in sides}
    for rep in range(args.warmup + args.reps):
        order = list(sides) if rep % 2 == 0 else list(sides)[::-1]
        for m in order:
            rec[m].append(one_step(*sides[m]))
    for m in rec:
        rec[m] = rec[m][args.warmup:]
    grpo_trainer = sides["grpo"][0]
    cfg = grpo_trainer.cfg
    med = {m: {k: _bench.median(r[k] for r in rec[m]) for k in rec[m][0]} for m in rec}
    ratio = _bench.paired_ratio([r["step"] for r in rec["skpo"]], [r["step"] for r in rec["grpo"]])
    print(f"# {_bench.machine_line()}")
    print(f"# tiny-arith, {cfg.train.prompts_per_step} prompts × G={grpo_trainer.method.group_size}, answers ≤ "
          f"{cfg.rollout.max_new_tokens} tokens, one optimizer step per step; median of {args.reps} interleaved steps")
    keys = ["step", "upstream gen", "answer gen", "scoring", "update", "other"]
    counts = ["decoded", "prefill", "trained", "trained upstream", "update forward"]
    rows = []
    for k in keys:
        rows.append([f"{k} (s)", f"{med['grpo'][k]:.3f}", f"{med['skpo'][k]:.3f}",
                     f"{med['skpo'][k] / med['grpo'][k]:.2f}×" if med["grpo"][k] > 1e-3 else "–"])
    for k in counts + ["upstream decode steps", "answer decode steps"]:
        rows.append([k if "steps" in k else f"{k} tokens", f"{med['grpo'][k]:.0f}", f"{med['skpo'][k]:.0f}",
                     f"{med['skpo'][k] / med['grpo'][k]:.2f}×" if med["grpo"][k] else "–"])
    print(_bench.table(["per step", "GRPO", "SKPO", "SKPO/GRPO"], rows))
    print(f"\nSKPO step / GRPO step (median of paired ratios): {ratio:.2f}×")


if __name__ == "__main__":
    main()
