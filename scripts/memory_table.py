"""Print docs/scaling.md's per-GPU memory table by phase (skpo.training.memory):

    python scripts/memory_table.py [--micro-batch-tokens 16384]
"""

from __future__ import annotations

import argparse

from skpo.training.memory import LLAMA32_3B, QWEN25_MATH_7B, phase_memory

SETUPS = [
    ("Qwen2.5-Math-7B, full fine-tuning, 1 × H200 141 GB", QWEN25_MATH_7B, 1, 141, False, False),
    ("Qwen2.5-Math-7B, LoRA r 64, 1 × H200 141 GB", QWEN25_MATH_7B, 1, 141, False, True),
    ("Qwen2.5-Math-7B, full fine-tuning, FSDP2 over 8 × 80 GB", QWEN25_MATH_7B, 8, 80, True, False),
    ("Llama-3.2-3B-Instruct, full fine-tuning, 1 × 80 GB", LLAMA32_3B, 1, 80, False, False),
    ("Llama-3.2-3B-Instruct, LoRA r 64, 1 × 80 GB", LLAMA32_3B, 1, 80, False, True),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--micro-batch-tokens", type=int, default=16384)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    args = p.parse_args()
    print("| set-up | resident | rollout | update | sync | fits |")
    print("|---|---:|---:|---:|---:|---|")
    for name, model, gpus, gb, sharded, lora in SETUPS:
        ph = phase_memory(model, gpus=gpus, gpu_gb=gb, sharded=sharded, lora=lora,
                          micro_batch_tokens=args.micro_batch_tokens, gpu_memory_utilization=args.gpu_memory_utilization)
        fits = "yes" if max(ph.values()) < 0.95 * gb else "no"
        print(f"| {name} | {ph['resident']:.0f} GB | {ph['rollout']:.0f} GB | {ph['update']:.0f} GB | "
              f"{ph['sync']:.0f} GB | {fits} |")


if __name__ == "__main__":
    main()
