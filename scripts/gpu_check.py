"""What ``scripts/gpu_check.sh`` runs on a GPU machine after the engine contract suite: a few
steps of a paper recipe at the paper's lengths, with time and tokens/s per phase and peak
GPU memory.

    python scripts/gpu_check.py [--recipe configs/paper/qwen2.5-math-7b-skpo.yaml]
                                [--model DIR] [--steps 5] [--prompts 16] [--engine vllm|hf]

Without ``--model`` it trains a stand-in of the recipe's model family (``skpo standin``: the
real architecture, chat template and special tokens, tiny random weights) — a random model
never answers correctly, so the reward is ``tests/data/rewards_for_tests.py:parity`` (mixed
groups, so every phase runs); with ``--model`` a real local model and the recipe's own reward.
Data: the shortest MATH-500 problems in the dapo-math-17k layout.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=str(ROOT / "configs/paper/qwen2.5-math-7b-skpo.yaml"))
    p.add_argument("--model", default=None, help="a real local model directory (default: a stand-in)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--prompts", type=int, default=16, help="prompts per step (the recipe: 128)")
    p.add_argument("--engine", choices=("vllm", "hf"), default="vllm")
    args = p.parse_args()

    import torch

    from skpo.config import load_config
    from skpo.evaluation.benchmarks import get_spec, load_problems
    from skpo.training.setup import build_trainer

    work = Path(tempfile.mkdtemp(prefix="skpo-gpu-check-"))
    family = "llama-3.2-3b-instruct" if "llama" in Path(args.recipe).name else "qwen2.5-math-7b"
    overrides = []
    model = args.model
    if model is None:
        from skpo.models.standin import make_standin

        model = str(make_standin(family, work / "standin"))
        overrides.append(f"reward.function={ROOT / 'tests/data/rewards_for_tests.py'}:parity")
    rows = []
    for prob in sorted(load_problems(get_spec("math500")), key=lambda x: len(x.question))[: 4 * args.prompts]:
        content = f"{prob.question}\n\nRemember to put your answer on its own line after \"Answer:\"."
        rows.append({"prompt": [{"role": "user", "content": content}], "reward_model": {"ground_truth": prob.gold}})
    data = work / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(args.recipe, [f"model.path={model}", f"data.path={data}", f"train.steps={args.steps}",
                                    f"train.prompts_per_step={args.prompts}", f"rollout.engine={args.engine}",
                                    "eval.every=0", "log.progress=false", "log.tensorboard=false",
                                    f"log.out_dir={work / 'run'}", *overrides])
    started = time.perf_counter()
    trainer = build_trainer(cfg)
    print(f"set-up {time.perf_counter() - started:.1f} s ({cfg.rollout.engine} engine, model {model})", flush=True)
    for step in range(args.steps):
        m = trainer.train_step(step)
        trainer.step += 1
        phases = {k.removeprefix("time/"): v for k, v in m.items() if k.startswith("time/")}
        print(json.dumps({"step": step + 1, "seconds": {k: round(v, 2) for k, v in phases.items()},
                          "decoded_tokens": m["tokens/decoded"],
                          "decode_tokens_per_s": round(m["throughput/decoded_tokens_per_s"]),
                          "trained_tokens_per_s": round(m["throughput/trained_tokens_per_s"]),
                          "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
                          if torch.cuda.is_available() else None}), flush=True)
    trainer.close()
    print(f"total {time.perf_counter() - started:.1f} s; run directory {work / 'run'}")


if __name__ == "__main__":
    main()
