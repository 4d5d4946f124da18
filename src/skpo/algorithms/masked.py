"""Masked reductions and loss aggregation over token tensors.

Conventions (verl's): token tensors are ``[B, T]`` (rows = responses, columns = response
positions) with a ``response_mask`` of the same shape, 1 for tokens that count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Σ values·mask over ``dim`` (all dims when None). Masked entries never contribute,
    even when they hold inf/NaN."""
    values = torch.where(mask.bool(), values, torch.zeros((), dtype=values.dtype, device=values.device))
    return values.sum() if dim is None else values.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean over the unmasked entries. An all-masked reduction gives 0 (not NaN)."""
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over the unmasked entries (Bessel-corrected when ``unbiased``)."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        count = mask.sum()
        if count < 2:
            return torch.zeros((), dtype=values.dtype, device=values.device)
        var = var * count / (count - 1)
    return var


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean)/sqrt(var + eps) over the unmasked entries (verl's ``masked_whiten``)."""
    mean = masked_mean(values, mask)
    whitened = (values - mean) * torch.rsqrt(masked_var(values, mask) + eps)
    return whitened if shift_mean else whitened + mean


@dataclass(frozen=True)
class AggDenominators:
    """Normalisers of a loss aggregation, fixed once per rollout (mini-)batch.

    Pass the same record to every micro-batch so that the micro-batch losses *sum* to the
    full-batch loss: a per-micro-batch token count would weight short micro-batches more
    (a known bug class). ``scale_factor`` is Dr. GRPO's constant (e.g. max response length).
    """

    num_tokens: float
    num_seqs: float
    scale_factor: float | None = None

    @staticmethod
    def from_mask(response_mask: torch.Tensor, scale_factor: float | None = None) -> AggDenominators:
        """Denominators of the full batch ``response_mask`` ``[B, T]``."""
        num_tokens = float(response_mask.sum().item())
        num_seqs = float((response_mask.sum(dim=-1) > 0).sum().item())
        return AggDenominators(num_tokens=num_tokens, num_seqs=num_seqs, scale_factor=scale_factor)


def agg_loss(
    loss_mat: torch.Tensor,
    loss_mask: torch.Tensor,
    mode: str,
    denominators: AggDenominators | None = None,
) -> torch.Tensor:
    """Aggregate a token loss matrix ``[B, T]`` into a scalar.

    Modes (verl names):
      - ``token-mean``: Σ_tokens loss / #tokens (DAPO, SKPO downstream).
      - ``token-sum``: Σ_tokens loss.
      - ``seq-mean-token-mean``: mean over sequences of each sequence's token mean (GRPO).
      - ``seq-mean-token-sum``: mean over sequences of each sequence's token sum.
      - ``seq-mean-token-sum-norm``: the above / ``scale_factor`` (Dr. GRPO; defaults to the
        padded width ``T`` like verl when no constant is given — set one for a true Dr. GRPO).

    With ``denominators`` (global counts) the result of a micro-batch is its share of the
    full-batch loss; without, the counts of this batch are used (= verl with dp_size 1).
    Fully masked rows are excluded from the sequence count.
    """
    if mode not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation mode {mode!r}; expected one of {AGG_MODES}")
    mask = loss_mask.to(loss_mat.dtype)
    if denominators is None:
        denominators = AggDenominators.from_mask(loss_mask)
    if mode == "token-mean":
        return masked_sum(loss_mat, mask) / max(denominators.num_tokens, 1.0)
    if mode == "token-sum":
        return masked_sum(loss_mat, mask)
    seq_tokens = mask.sum(dim=-1)  # [B]
    seq_sums = masked_sum(loss_mat, mask, dim=-1)  # [B]
    if mode == "seq-mean-token-mean":
        per_seq = seq_sums / (seq_tokens + 1e-8)
    else:
        per_seq = seq_sums
    loss = per_seq.sum() / max(denominators.num_seqs, 1.0)  # empty rows contribute 0
    if mode == "seq-mean-token-sum-norm":
        scale = denominators.scale_factor if denominators.scale_factor is not None else loss_mask.shape[-1]
        loss = loss / scale
    return loss
