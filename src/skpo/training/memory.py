"""Per-GPU memory of a run, phase by phase: the arithmetic behind docs/scaling.md's tables.

The training state (weights, gradients, AdamW moments) is exact: FSDP2 splits every tensor on
its first dimension the way ``torch.chunk`` does, one chunk per rank, and the per-rank bytes
follow (``tests/test_memory.py`` checks them against the bytes a stand-in's shards, gradients
and AdamW state hold on each of 2 ranks over gloo). Activations and logits are estimates with
their constants stated; the logits' per-token cost is the one measured on an H200 (docs/
gpu_check: peak 32.4 GiB in an update of 32,768-token micro-batches through a 152,064-token
vocabulary, where a stand-in's layers are negligible).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["ModelShape", "TrainingState", "chunk_rows", "phase_memory", "training_state", "GB"]

GB = 1e9
LOGIT_BYTES_PER_TOKEN_AND_VOCAB = 7.0  # measured: 32.4 GiB / (32768 tokens × 152064) ≈ 7.0 B
ACTIVATION_BYTES_PER_TOKEN_AND_HIDDEN = 2.0  # a checkpointed layer input, bf16


def chunk_rows(rows: int, world: int, rank: int) -> int:
    """Rows of a ``rows``-row tensor that rank ``rank`` of ``world`` holds (``torch.chunk``: chunks
    of ``ceil(rows / world)``, the last ones shorter or empty)."""
    size = math.ceil(rows / world) if rows else 0
    return max(0, min(size, rows - rank * size))


@dataclass(frozen=True)
class TrainingState:
    """Bytes one rank holds for the training state."""

    weights: int
    gradients: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer


def training_state(shapes: Iterable[Sequence[int]], trainable: Iterable[bool] | None = None, *, world: int = 1,
                   rank: int = 0, weight_bytes: int = 4, grad_bytes: int = 4, moment_bytes: int = 4,
                   moments: int = 2) -> TrainingState:
    """Per-rank bytes of weights, gradients and AdamW moments for parameters of ``shapes``,
    sharded FSDP2-style over ``world`` ranks (``world=1``: unsharded). Frozen parameters
    (``trainable`` False: a LoRA base) hold weights only."""
    shapes = [tuple(s) for s in shapes]
    flags = [True] * len(shapes) if trainable is None else list(trainable)
    weights = grads = optimizer = 0
    for shape, train in zip(shapes, flags):
        rest = math.prod(shape[1:]) if len(shape) > 1 else 1
        numel = chunk_rows(shape[0], world, rank) * rest if shape else 1
        weights += numel * weight_bytes
        if train:
            grads += numel * grad_bytes
            optimizer += numel * moment_bytes * moments
    return TrainingState(weights, grads, optimizer)


@dataclass(frozen=True)
class ModelShape:
    """What the estimates need of a model (a Hugging Face config's values)."""

    name: str
    params: float  # total parameters
    layers: int
    hidden: int
    kv_heads: int
    head_dim: int
    vocab: int
    lora_params: float = 0.0  # adapter parameters of the LoRA set-up the tables use

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


QWEN25_MATH_7B = ModelShape("Qwen2.5-Math-7B", 7.62e9, 28, 3584, 4, 128, 152064,
                            lora_params=28 * 64 * (2 * 3584 + 2 * (3584 + 512) + 2 * 3584 + 3 * (3584 + 18944)))
LLAMA32_3B = ModelShape("Llama-3.2-3B-Instruct", 3.21e9, 28, 3072, 8, 128, 128256,
                        lora_params=28 * 64 * (2 * 3072 + 2 * (3072 + 1024) + 2 * 3072 + 3 * (3072 + 8192)))


def phase_memory(model: ModelShape, *, gpus: int, gpu_gb: float, sharded: bool, lora: bool = False,
                 micro_batch_tokens: int = 32768, gpu_memory_utilization: float = 0.3,
                 checkpointing: bool = True) -> dict[str, float]:
    """Estimated GB per GPU in each phase of a colocated vLLM run (sleep level 2).

    - rollout: the trainer's resident state (training state; LoRA: frozen fp32 base + adapter
      state) + vLLM's share (``gpu_memory_utilization × gpu_gb``: its bf16 weights and KV cache);
    - update: the resident state + activations of one micro-batch (checkpointed layer inputs in
      bf16, one layer recomputed) + logits (measured per-token constant); vLLM asleep (~1 GB kept);
    - sync: the resident state + vLLM's weights woken (bf16) + one bucket (0.5 GB) + a sharded
      run's one gathered tensor at a time (the largest: the embedding, in float32).
    """
    n = model.params
    if lora:
        resident = 4 * n + 16 * model.lora_params  # frozen fp32 base, adapters' weights/grads/moments
    else:
        resident = 16 * n / (gpus if sharded else 1)
    vllm_weights = 2 * n
    vllm_share = gpu_memory_utilization * gpu_gb * GB
    tokens = micro_batch_tokens
    layer_inputs = model.layers * tokens * model.hidden * ACTIVATION_BYTES_PER_TOKEN_AND_HIDDEN if checkpointing \
        else model.layers * tokens * model.hidden * 34  # without checkpointing: ~34 bytes per token and hidden
    one_layer = tokens * model.hidden * 34 if checkpointing else 0
    logits = tokens * model.vocab * LOGIT_BYTES_PER_TOKEN_AND_VOCAB
    gathered = 4 * model.vocab * model.hidden if sharded else 0
    return {
        "resident": resident / GB,
        "rollout": (resident + vllm_share) / GB,
        "update": (resident + 1 * GB + layer_inputs + one_layer + logits + gathered) / GB,
        "sync": (resident + 1 * GB + vllm_weights + 0.5 * GB + gathered) / GB,
    }
