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

__all__ = ["ModelShape", "TrainingState", "chunk_rows", "phase_memory", "sync_tensor_bytes", "training_state",
           "weight_sync_peak", "GB"]

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
    - sync: the resident state + vLLM's weights woken (bf16) + one bucket (0.5 GB) + the one
      tensor being prepared (:func:`sync_tensor_bytes` of the largest, the embedding: its bf16
      copy, and when sharded its gathered float32 whole as well). A LoRA run's merged tensors are
      smaller than that (its largest adapted weight, an MLP projection, costs 8 bytes per entry
      while merged: 0.54 GB on the 7B against the embedding's 1.09 GB in bf16).
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
    embedding = model.vocab * model.hidden
    # the bucket being filled + the largest tensor being prepared: the embedding (or the untied
    # LM head, as large), sent after small tensors or none (weight_sync_peak is the exact count)
    prepared = sync_tensor_bytes(embedding, "gathered" if sharded else "cast")[1]
    return {
        "resident": resident / GB,
        "rollout": (resident + vllm_share) / GB,
        "update": (resident + 1 * GB + layer_inputs + one_layer + logits + gathered) / GB,
        "sync": (resident + 1 * GB + vllm_weights + 0.5 * GB + prepared) / GB,
    }


def sync_tensor_bytes(numel: int, built: str = "cast", *, engine_bytes: int = 2, master_bytes: int = 4,
                      moved_shard_numel: int = 0) -> tuple[int, int]:
    """What one tensor of a vLLM weight sync (``skpo.engines.vllm_engine``) costs while it is
    prepared: ``(bytes of its copy in the engine's dtype, bytes alive at most while it is made)``.

    ``built``: ``"cast"`` — the policy's own tensor, copied to the engine's dtype (nothing but the
    copy is new); ``"gathered"`` — a shard all-gathered into the whole float32 tensor, then cast
    (``moved_shard_numel``: a CPU-offloaded shard's entries, copied to the device for the gather;
    the collective's own buffers are not counted); ``"merged"`` — a LoRA-adapted weight ``W + ΔW``:
    peft's ``ΔW`` and the sum, both float32, exist together, then the sum and its cast."""
    copy = engine_bytes * numel
    whole = master_bytes * numel
    if built == "cast":
        return copy, copy
    if built == "gathered":
        return copy, max(master_bytes * moved_shard_numel + whole, whole + copy)
    if built == "merged":
        return copy, max(2 * whole, whole + copy)
    raise ValueError(f"built must be cast, gathered or merged, got {built!r}")


def weight_sync_peak(tensors: Iterable[tuple[int, int]], bucket_bytes: int) -> int:
    """The most bytes a weight sync holds beyond the policy and the engine, exactly: ``tensors``
    are :func:`sync_tensor_bytes` pairs in the order they are sent. The bucket being filled is
    held while the next tensor is prepared (a tensor that does not fit is made before the full
    bucket is loaded and released); a prepared tensor's whole float32 form is gone before the
    next is made. Bounded by the larger of ``bucket_bytes`` and the largest copy (a tensor larger
    than a bucket is a bucket alone) + the largest tensor's preparation."""
    held = peak = 0
    for copy, making in tensors:
        peak = max(peak, held + making)
        if held and held + copy > bucket_bytes:
            held = 0  # the full bucket is loaded and released
        held += copy
    return peak
