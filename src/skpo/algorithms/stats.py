"""KL estimators, token log-probs and entropy from logits (chunked for large vocabularies).

Shapes: logits ``[..., V]``; labels and outputs ``[...]``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

KL_ESTIMATORS = ("k1", "k2", "k3", "abs")


def kl_penalty(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(π_θ ‖ π_ref) from samples of π_θ (Schulman's estimators).

    - ``k1``: ``log π − log π_ref`` (unbiased, high variance, can be negative);
    - ``k2``: ``½ (log π − log π_ref)²``;
    - ``k3``: ``exp(Δ) − Δ − 1`` with ``Δ = log π_ref − log π`` (unbiased, ≥ 0; verl's
      ``low_var_kl``: Δ clamped to ±20 and the result to ±10);
    - ``abs``: ``|k1|``.
    A trailing ``+`` (``k1+``, ``k3+``) keeps the value of that estimator but takes the
    gradient of ``k2`` (straight-through), whose gradient is unbiased for the KL.
    """
    straight_through = kind.endswith("+")
    base = kind[:-1] if straight_through else kind
    diff = log_prob - ref_log_prob
    if base == "k1":
        value = diff
    elif base == "abs":
        value = diff.abs()
    elif base == "k2":
        value = 0.5 * diff.square()
    elif base == "k3":
        delta = (-diff).clamp(-20, 20)
        value = (torch.exp(delta) - delta - 1).clamp(-10, 10)
    else:
        raise ValueError(f"unknown KL estimator {kind!r}; expected one of {KL_ESTIMATORS} (optionally with '+')")
    if not straight_through or base == "k2":
        return value
    grad_path = 0.5 * diff.square()
    return grad_path - grad_path.detach() + value.detach()


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1) - (F.softmax(logits, dim=-1) * logits).sum(dim=-1)


def _logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    return logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


_AUTO_CHUNK_ELEMENTS = 1 << 25


def _chunked(fn, chunk_size: int | Literal["auto"] | None, *tensors: torch.Tensor) -> torch.Tensor:
    """Apply ``fn`` over chunks of rows of the flattened leading dims.

    Each chunk upcasts only itself to float32, and under autograd each chunk is
    recomputed in backward (activation checkpointing) so the ``[N, V]`` softmax of the whole
    batch is never held at once.
    """
    head = tensors[0].shape[:-1]
    flat = [t.reshape(-1, t.shape[-1]) if t.dim() == len(head) + 1 else t.reshape(-1) for t in tensors]
    n = flat[0].shape[0]
    if chunk_size == "auto":  # rows per chunk so that a chunk's float32 [rows, V] is ~128 MB
        chunk_size = max(1, _AUTO_CHUNK_ELEMENTS // tensors[0].shape[-1])
    if chunk_size is None or n <= chunk_size:
        return fn(*flat).reshape(head)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in flat)
    outs = []
    for start in range(0, n, chunk_size):
        parts = [t[start : start + chunk_size] for t in flat]
        outs.append(checkpoint(fn, *parts, use_reentrant=False) if needs_grad else fn(*parts))
    return torch.cat(outs).reshape(head)


def entropy_from_logits(logits: torch.Tensor, chunk_size: int | Literal["auto"] | None = "auto") -> torch.Tensor:
    """Token entropy ``H = logsumexp(z) − Σ softmax(z)·z`` in float32, ``[..., V] → [...]``.

    ``chunk_size`` rows at a time bounds peak memory whatever the batch: at a 150k
    vocabulary a float32 softmax of 1024 rows is 0.6 GB. ``"auto"`` sizes chunks to ~128 MB
    (223 rows at 150k; a small vocabulary is one pass, with no recomputation). None = one pass.
    """
    return _chunked(_entropy, chunk_size, logits)


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor, chunk_size: int | Literal["auto"] | None = "auto") -> torch.Tensor:
    """``log softmax(z)[label]`` in float32, ``[..., V], [...] → [...]``, chunked like entropy."""
    return _chunked(_logprobs, chunk_size, logits, labels)
