"""This checkout's training step against an earlier git revision's, measured in one run (a
script, not a test).

The earlier revision is checked out into a temporary ``git worktree``; each round starts one
process per side (alternating which goes first), and each process builds a trainer from the
shipped tiny model with the embedded recipe, runs one warm-up step and ``--steps`` timed
steps, and prints its phase times. Medians over all rounds; ratios of medians.

    python benchmarks/before_after.py --ref e285b8a                 # GRPO and SKPO
    python benchmarks/before_after.py --ref HEAD~3 --methods skpo --rounds 4
    python benchmarks/before_after.py --ref HEAD --methods grpo --rounds 1 --steps 1 \
        train.prompts_per_step=2 rollout.max_new_tokens=8                          # smallest run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _bench

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, tempfile, torch, warnings
warnings.filterwarnings("ignore")
from skpo.config import load_config
from skpo.training.setup import build_trainer
method, steps, threads, overrides = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
if threads:
    torch.set_num_threads(threads)
cfg = load_config(None, [f"train.method={method}", "model.device=cpu", "eval.every=0", "log.progress=false",
                         "log.tensorboard=false", f"log.out_dir={tempfile.mkdtemp()}", *overrides])
trainer = build_trainer(cfg)
out = []
for step in range(steps + 1):
    m = trainer.train_step(step)
    trainer.state.step += 1
    if step:
        out.append({k: v for k, v in m.items() if k.startswith("time/") or k.startswith("tokens/")})
print("RESULT " + json.dumps(out))
"""


def run_side(src: Path, method: str, steps: int, threads: int, overrides: list[str]) -> list[dict[str, float]]:
    env = dict(os.environ, PYTHONPATH=str(src))
    proc = subprocess.run([sys.executable, "-c", CHILD, method, str(steps), str(threads), json.dumps(overrides)], env=env,
                          capture_output=True, text=True, cwd=src.parent)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"{src}: benchmark process failed:\n{proc.stderr[-2000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", required=True, help="the earlier git revision")
    ap.add_argument("--methods", default="grpo,skpo")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per process")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("overrides", nargs="*", help="config overrides (key=value) for both sides")
    args = ap.parse_args()
    rev = subprocess.run(["git", "rev-parse", "--short", args.ref], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    tree = Path(tempfile.mkdtemp(prefix="skpo-before-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=REPO, check=True, capture_output=True)
    try:
        sides = {f"before ({rev})": tree / "src", f"after ({head}, working tree)": REPO / "src"}
        print(f"# {_bench.machine_line()}")
        print(f"# embedded recipe (16 prompts × 8, answers ≤ 64){' with ' + ' '.join(args.overrides) if args.overrides else ''}, "
              f"{args.rounds} rounds × {args.steps} steps per side, processes alternated")
        for method in args.methods.split(","):
            rec: dict[str, list[dict[str, float]]] = {k: [] for k in sides}
            for r in range(args.rounds):
                names = list(sides) if r % 2 == 0 else list(sides)[::-1]
                for name in names:
                    rec[name] += run_side(sides[name], method, args.steps, args.threads, args.overrides)
            keys = ["time/step", "time/rollout", "time/old_log_probs", "time/update"]
            med = {n: {k: _bench.median(x.get(k, 0.0) for x in rec[n]) for k in keys} for n in sides}
            (before, after) = list(sides)
            rows = [[k[5:], f"{med[before][k]:.3f}", f"{med[after][k]:.3f}",
                     f"{med[before][k] / med[after][k]:.2f}×" if med[after][k] > 1e-3 else "–"] for k in keys]
            print(f"\n{method}")
            print(_bench.table(["seconds per step", before, after, "speed-up"], rows))
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)


if __name__ == "__main__":
    main()
