"""What the worker process costs a user reward function (a script, not a test).

A user function runs in a forked worker (skpo.rewards.user): one round trip over a socket pair
per batch, the completions and problems pickled there and the verdicts back. This times one
batch through the worker against the same function called in this process (``reward.worker:
false``), interleaved, for batch sizes a rollout step scores, with completions of realistic
length and problems that carry their data row.

    python benchmarks/user_reward_worker.py                    # defaults below
    python benchmarks/user_reward_worker.py --batch 16 256 --chars 2000 --reps 30
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
from pathlib import Path

import _bench

from skpo.rewards.registry import get_reward
from skpo.tasks.dataset import Problem

REWARD = textwrap.dedent("""\
    def score(completion, example):
        return float(example.gold in completion[-200:])
    """)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--chars", type=int, default=2000, help="characters per completion")
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench_reward.py"
        path.write_text(REWARD)
        worker = get_reward(f"{path}:score")
        inline = get_reward(f"{path}:score", worker=False)
        rows = []
        for n in args.batch:
            texts = [f"step {i} ... " * (args.chars // 12) + f"\\boxed{{{i}}}" for i in range(n)]
            problems = [Problem(index=i, id=str(i), question=f"What is {i}?", gold=str(i),
                                row={"question": f"What is {i}?", "answer": str(i), "solution": "x" * 500})
                        for i in range(n)]
            assert [v.reward for v in worker.score(texts, problems)] == [v.reward for v in inline.score(texts, problems)]
            times = _bench.interleave({"worker": lambda: worker.score(texts, problems),  # noqa: B023 - timed here
                                       "inline": lambda: inline.score(texts, problems)}, args.reps)  # noqa: B023
            w, i = _bench.median(times["worker"]), _bench.median(times["inline"])
            rows.append([str(n), f"{w * 1e3:.2f}", f"{i * 1e3:.2f}", f"{(w - i) * 1e3:.2f}", f"{(w - i) / n * 1e6:.1f}"])
    print(_bench.machine_line())
    print(f"completions of {args.chars} characters; medians of {args.reps} interleaved repetitions")
    print(_bench.table(["batch", "worker ms", "in-process ms", "overhead ms", "overhead µs/answer"], rows))


if __name__ == "__main__":
    main()
