"""PRIME: process rewards from an implicit PRM (Cui et al. 2025, "Process Reinforcement through
Implicit Rewards", arXiv 2502.01456), with verl-recipe's ``prime`` as the numeric reference
(``prime_core_algos.py``, ``prime_dp_rm.py``, ``prime_ray_trainer.py``).

The implicit PRM ``π_φ`` is a causal LM trained online with a sequence-level cross-entropy on
the outcome labels; its per-token log-ratio to a frozen reference ``π_ref`` is a dense reward.
This module holds the math, pure functions of tensors; the model that produces the log-probs
is :mod:`skpo.models.reward_models` (``implicit_prm``).

Shapes: ``B`` rows (responses), ``T`` response positions; ``response_mask`` ``[B, T]``.

    q_t         = log π_φ(y_t | ·) − log π_ref(y_t | ·)                      (implicit_log_ratio)
    r_φ(t)      = β · q_t                                                     (implicit_token_rewards)
    PRM loss    = BCE(σ(β · Σ_t q_t), label ∈ {0, 1})                         (prm_cross_entropy)
    r̃_φ(t)      = r_φ(t) / (max_{b,t} |Σ_{t'≥t} r_φ(b, t')| + 1e-6)           (normalize_by_max_return)
    A           = whiten(revcumsum(c_dpo · RLOO(r̃_φ) + c_gt · RLOO(outcome at the last token)))

Readings and deviations (each also in ``docs/methods.md``):
- verl's ``token`` granularity writes ``r_φ`` on every response token *except the last*
  (``token_level_score[i, :L-1] = r[i, :L-1]``); the paper's formula has every token. verl is
  followed (``score_last_token=False``); ``True`` gives the paper's reading.
- verl's ``masked_rloo`` is not a per-token leave-one-out: with ``m_j`` the row mean of the
  scores over the mask, a token gets ``r_t · G/(G−1) − Σ_j m_j/(G−1)``. That is reproduced
  exactly (for the outcome, masked to the last token, it is plain RLOO: ``acc_i − mean_{j≠i}
  acc_j``). verl groups ``n_samples`` contiguous rows; here groups are the rows of one
  ``index`` (the same for verl's layout), and a singleton group keeps its raw scores (verl
  divides by zero) — a reading.
- verl normalises the implicit rewards over each data-parallel worker's shard; here over the
  whole batch the reward model scores (what one process would see) — a reading.
- The cross-entropy is computed from the logit ``β Σ q`` (``binary_cross_entropy_with_logits``);
  verl applies ``binary_cross_entropy`` to ``σ(β Σ q)``, which clamps ``log`` at −100: the same
  value wherever neither is saturated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .advantages import ADVANTAGE_ESTIMATORS, AdvantageInputs, Index
from .groups import group_ids
from .masked import masked_whiten

__all__ = [
    "PrimeParams",
    "implicit_log_ratio",
    "implicit_token_rewards",
    "last_token_mask",
    "leave_one_out_token_scores",
    "normalize_by_max_return",
    "prime_advantage",
    "prm_cross_entropy",
    "reverse_cumsum",
]


def implicit_log_ratio(prm_log_probs: torch.Tensor, ref_log_probs: torch.Tensor,
                       response_mask: torch.Tensor) -> torch.Tensor:
    """``q_t = log π_φ(y_t|·) − log π_ref(y_t|·)`` on response tokens, 0 elsewhere.

    Args:
        prm_log_probs, ref_log_probs: ``[B, T]`` log-probs of the response tokens.
        response_mask: ``[B, T]``.
    Returns:
        ``[B, T]`` (differentiable in ``prm_log_probs``).
    """
    diff = prm_log_probs - ref_log_probs.to(prm_log_probs.dtype)
    return torch.where(response_mask.bool(), diff, torch.zeros((), dtype=diff.dtype, device=diff.device))


def last_token_mask(response_mask: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` bool, True at each row's last response token (none for an empty row)."""
    mask = response_mask.bool()
    lengths = mask.sum(-1)
    out = torch.zeros_like(mask)
    rows = torch.nonzero(lengths > 0).squeeze(-1)
    out[rows, lengths[rows] - 1] = True
    return out


def implicit_token_rewards(log_ratio: torch.Tensor, response_mask: torch.Tensor, beta: float,
                           score_last_token: bool = False) -> torch.Tensor:
    """PRIME's implicit process reward ``r_φ(t) = β · q_t``.

    Args:
        log_ratio: ``[B, T]`` ``q`` from :func:`implicit_log_ratio`.
        response_mask: ``[B, T]``.
        beta: β (verl's ``reward_model.model.beta_train``, 0.05).
        score_last_token: False (verl's ``token`` granularity) leaves the last response token
            without an implicit reward; True scores it too (the paper's formula).
    Returns:
        ``[B, T]``, 0 on masked tokens (and on the last token unless ``score_last_token``).
    """
    keep = response_mask.bool()
    if not score_last_token:
        keep = keep & ~last_token_mask(response_mask)
    rewards = beta * log_ratio
    return torch.where(keep, rewards, torch.zeros((), dtype=rewards.dtype, device=rewards.device))


def reverse_cumsum(values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Returns-to-go ``G_t = Σ_{t' ≥ t} x_{t'}`` (γ = 1) of the masked values, ``[B, T]``."""
    masked = values * response_mask.to(values.dtype)
    return masked.flip(dims=[-1]).cumsum(dim=-1).flip(dims=[-1])


def normalize_by_max_return(token_rewards: torch.Tensor, response_mask: torch.Tensor,
                            eps: float = 1e-6) -> torch.Tensor:
    """verl's ``prime_norm: batch_norm``: every score divided by the batch's largest absolute
    return-to-go, ``r / (max_{b,t} |Σ_{t' ≥ t} r_{b,t'}| + ε)``. ``[B, T]`` → ``[B, T]``."""
    scale = reverse_cumsum(token_rewards, response_mask).abs().max() if token_rewards.numel() else 0.0
    return token_rewards / (scale + eps)


def prm_cross_entropy(log_ratio: torch.Tensor, labels: torch.Tensor, response_mask: torch.Tensor,
                      beta: float) -> torch.Tensor:
    """The implicit PRM's loss per row (verl's ``compute_ce_dpo_loss_rm``, ``loss_type: ce``):
    binary cross-entropy of ``σ(β · Σ_t q_t)`` against the outcome label.

    Args:
        log_ratio: ``[B, T]`` ``q`` (carries the gradient to π_φ).
        labels: ``[B]`` outcome labels in [0, 1] (verl's ``acc``).
        response_mask: ``[B, T]``.
        beta: β (``beta_train``).
    Returns:
        ``[B]`` per-row losses; the caller averages them over its (mini-)batch.
    """
    logits = beta * (log_ratio * response_mask.to(log_ratio.dtype)).sum(dim=-1)
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")


def leave_one_out_token_scores(scores: torch.Tensor, mask: torch.Tensor, index: Index) -> torch.Tensor:
    """verl-recipe ``prime``'s ``masked_rloo``, by group ``index``.

    With ``m_j`` the mean of row ``j``'s scores over ``mask`` and ``G`` the group size, a masked
    token gets ``r_t · G/(G−1) − Σ_{j ∈ group} m_j / (G−1)``; unmasked ones get 0. A singleton
    group keeps its raw scores (reading: verl divides by zero there).

    Args:
        scores: ``[B, T]``; mask: ``[B, T]`` the tokens that carry scores; index: ``[B]`` group keys.
    Returns:
        ``[B, T]``.
    """
    mask_f = mask.to(scores.dtype)
    counts = mask_f.sum(-1)
    row_mean = (scores * mask_f).sum(-1) / counts.clamp(min=1)  # [B]; 0 for a row without tokens
    ids, k = group_ids(index)
    ids = ids.to(scores.device)
    size = torch.zeros(k, dtype=scores.dtype, device=scores.device).index_add_(0, ids, torch.ones_like(row_mean))[ids]
    total = torch.zeros(k, dtype=scores.dtype, device=scores.device).index_add_(0, ids, row_mean)[ids]
    denom = (size - 1).clamp(min=1)
    loo = scores * (size / denom).unsqueeze(-1) - (total / denom).unsqueeze(-1)
    out = torch.where((size > 1).unsqueeze(-1), loo, scores)
    return out * mask_f


@dataclass(frozen=True)
class PrimeParams:
    reward_dpo_coef: float = 5.0  # weight of the RLOO'd implicit process rewards (verl's algorithm.reward_dpo_coef)
    reward_gt_coef: float = 5.0  # weight of the RLOO'd outcome reward at the last token (algorithm.reward_gt_coef)


@ADVANTAGE_ESTIMATORS.register("prime", PrimeParams, group_key="prompt", needs=("token_rewards",))
def prime_advantage(batch: AdvantageInputs, params: PrimeParams) -> torch.Tensor:
    """PRIME's advantage (verl-recipe ``compute_rloo_advantage_return``)::

        R = c_dpo · RLOO(token_rewards) + c_gt · RLOO(outcome at the last token)
        returns = reverse cumulative sum of R over the response (γ = 1)
        A = masked_whiten(returns)  (over every scored token of the batch)

    ``token_rewards`` ``[B, T]`` are the reward model's (normalised) implicit rewards; the
    outcome is the row sum of ``token_level_rewards`` (verl's ``acc``: the method's
    ``reward_range`` is [0, 1]). A coefficient of 0 drops its source, as in verl.

    Returns:
        ``[B, T]`` advantages, 0 on masked tokens.
    """
    batch.require("index", "token_rewards")
    assert batch.index is not None and batch.token_rewards is not None  # require() raised otherwise
    mask = batch.response_mask
    dtype = torch.float32
    combined = torch.zeros_like(mask, dtype=dtype)
    if params.reward_dpo_coef != 0.0:
        implicit = batch.token_rewards.to(dtype=dtype, device=mask.device)
        combined = combined + params.reward_dpo_coef * leave_one_out_token_scores(implicit, mask.bool(), batch.index)
    if params.reward_gt_coef != 0.0:
        last = last_token_mask(mask)
        outcome = last.to(dtype) * batch.scores.to(dtype).unsqueeze(-1)
        combined = combined + params.reward_gt_coef * leave_one_out_token_scores(outcome, last, batch.index)
    returns = reverse_cumsum(combined, mask)
    return masked_whiten(returns, mask) * mask.to(dtype)
