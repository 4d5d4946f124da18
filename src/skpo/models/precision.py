"""Mixed precision: float32 master weights, bf16/fp16 compute, and where the LM head computes.

verl (FSDP ``MixedPrecision``) and TRL (``bf16=True``) keep the weights and the optimizer state in
float32 and run the forward in bf16; so does the trainer (``model.dtype`` is the compute dtype,
applied with ``torch.autocast`` around every forward, see :func:`skpo.engines.hf_engine.autocast`).
Stepping AdamW on bf16 weights instead loses most updates at the paper's learning rate: a bf16
weight of magnitude 0.02 moves in steps of 1.2e-4, so an update of 1e-6 rounds away
(``model.pure_low_precision`` allows it, with a warning).

The LM head. ``model.lm_head_precision``:

- ``compute``: the head runs in the compute dtype like every other layer (the paper's bf16).
- ``float32``: the head's matmul runs in float32 on float32 activations, so logits, sampling
  log-probs and training log-probs are full precision — TRL's ``cast_lm_head_to_fp32``, which
  ScaleRL and MiniMax-M1 recommend to shrink the gap between rollout and training log-probs.
- ``auto`` (default): ``float32`` on CPU, ``compute`` elsewhere. CPUs without native bf16 matrix
  units (no AVX512-BF16/AMX) run bf16 GEMMs an order of magnitude slower than float32 — measured
  on this project's 2-core machine: a ``[2048, 64] × [64, 152064]`` product 44 s in bf16 against
  4.6 s in float32 — and the head of a 150k-token vocabulary is nearly all of a stand-in model's
  work. On GPUs ``auto`` keeps the paper's bf16 head.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, cast

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["head_in_float32", "lm_head_float32"]


def lm_head_float32(precision: str, device: torch.device | str) -> bool:
    """Whether the LM head computes in float32 for ``model.lm_head_precision`` on ``device``."""
    if precision == "auto":
        return torch.device(device).type == "cpu"
    return precision == "float32"


def head_in_float32(model: torch.nn.Module) -> None:
    """Make ``model``'s output head compute in float32 under any autocast (in place, idempotent).

    The head's ``forward`` is wrapped: autocast off, input cast to float32, so the float32 master
    weight is used as is. Weights, state-dict keys and tied embeddings are unchanged. The wrapper
    is a method bound to the head, so a ``copy.deepcopy`` of the model (the KL reference, a
    reward model) computes with its own head, not the original's.
    """
    head = cast("PreTrainedModel", model).get_output_embeddings()  # (a transformers model, or peft's wrapper of one)
    if head is None or getattr(head, "_skpo_float32", False):
        return
    head.forward = types.MethodType(_float32_head_forward, head)
    head._skpo_float32 = True


def _float32_head_forward(head: torch.nn.Module, hidden: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        weight = getattr(head, "weight", None)
        if isinstance(head, torch.nn.Linear) and weight is not None and weight.dtype != torch.float32:
            # a sharded run gathers the head in the compute dtype (MixedPrecisionPolicy): the matmul
            # still runs in float32, on those values
            bias = None if head.bias is None else head.bias.float()
            return torch.nn.functional.linear(hidden.float(), weight.float(), bias)
        return type(head).forward(head, hidden.float(), *args, **kwargs)
