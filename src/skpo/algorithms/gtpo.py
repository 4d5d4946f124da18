"""GTPO — trajectory-based policy optimisation with conflict tokens and an entropy gate
(Simoni, Fontana et al. 2025, arXiv 2508.03772; v5 "Stabilizing GRPO via Gradient and
Entropy Control"). Not the other 2025 "GTPO" (token-level entropy reward shaping).

Completions of one group often share scaffolding (the same token at the same position in
correct and wrong answers). GRPO pushes such a token up in the positive completions and down
in the negative ones; GTPO skips the negative update of these *conflict tokens* and doubles
the positive one, and it silences completions whose mean entropy is high.

Source: the authors' code, winstonsmith1897/GTPO@5d33811 (``gtpo/gtpo_training.py``:
``build_conflict_mask``, ``gtpo_compute_loss``, ``UnslothEfficientGTPO.forward``;
``config.yaml``). Per group of a prompt, with GRPO advantages ``A_i`` (``[B]``)::

    active: A_i ≠ 0;  positive: A_i > 0;  negative: A_i < 0
    conflict_fwd(i, t): token o_{i,t} sits at position t in ≥ 1 positive AND ≥ 1 negative active
                        completion — only the leading run of such positions from t = 0 counts
    conflict_bwd(i, t): the same with positions counted from each completion's end (trailing run)
    δ_dir(i, t) = W (= 2) if conflict_dir and A_i > 0;  0 if conflict_dir and A_i < 0;  1 otherwise
    δ(i, t)     = δ_fwd · δ_bwd    (a token in both runs of a positive completion weighs W²)
    n_i         = max(1, #{t: conflict_fwd or conflict_bwd})
    ⟨H⟩_i       = mean token entropy of completion i
    Â_i         = A_i − γ·⟨H⟩_i  if ⟨H⟩_i ≤ τ (0.7)  else 0       (γ = 0.1)
    A_{i,t}     = Â_i · δ(i, t) / n_i                               (token advantage)

The code's loss is the on-policy ``−Σ_t r_{i,t}·A_{i,t} / |o_i|`` per completion (ratio
``exp(log π − sg(log π))``), i.e. ``seq-mean-token-mean`` of a ratio loss: the preset uses
``ppo_clip`` (at ratio 1 the same gradient; off-policy, PPO's clip applies — a reading).

Readings and deviations (stated):
- ``⟨H⟩_i`` is the rollout policy's entropy (the ``entropy`` token statistic, temperature-scaled
  logits); the code takes it from the current policy in the loss, the same policy on-policy.
- The division by ``n_i`` is the code's (the paper's formula does not show it):
  ``divide_by_conflicts`` switches it.
- The README's entropy filter (against ``ln 2`` and the initial entropy) differs from the code;
  the code's gate (``τ``, ``γ``) is implemented.
- GRPO's advantage uses verl's ``ε = 1e-6`` (the code goes through TRL: 1e-4).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from .advantages import ADVANTAGE_ESTIMATORS, AdvantageInputs, group_normalized_scores
from .groups import group_ids
from .masked import masked_mean


@dataclass(frozen=True)
class GTPOParams:
    epsilon: float = 1e-6  # GRPO's group z-score
    norm_by_std: bool = True
    conflict_weight: float = 2.0  # W_RAW: weight of a positive completion's conflict tokens
    entropy_threshold: float = 0.7  # τ: completions with mean entropy above it get advantage 0
    entropy_penalty: float = 0.1  # γ: A ← A − γ·⟨H⟩ below the threshold
    divide_by_conflicts: bool = True  # the code's 1/n_i per completion

    def __post_init__(self) -> None:
        if self.conflict_weight < 0 or self.entropy_penalty < 0:
            raise ValueError(f"conflict_weight and entropy_penalty must be >= 0 "
                             f"(got {self.conflict_weight}, {self.entropy_penalty})")


def _leading_run(flags: torch.Tensor) -> torch.Tensor:
    """``[n, T]`` bool → the run of True from column 0 in each row."""
    return torch.cumprod(flags.to(torch.int64), dim=-1).bool()


def _conflicts(keys: torch.Tensor, valid: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """``[n, T]`` bool: the token key (position, token id) occurs in a valid position of at least
    one positive and one negative row."""
    in_pos = torch.isin(keys, keys[positive.unsqueeze(-1) & valid])
    in_neg = torch.isin(keys, keys[negative.unsqueeze(-1) & valid])
    return in_pos & in_neg & valid & (positive | negative).unsqueeze(-1)


def conflict_weights(
    response_ids: torch.Tensor, response_mask: torch.Tensor, index: Sequence[Hashable] | torch.Tensor,
    advantages: torch.Tensor, conflict_weight: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GTPO's token weights ``δ`` ``[B, T]`` and conflict counts ``n`` ``[B]`` (≥ 1), per group.

    Args:
        response_ids: ``[B, T]`` token ids; response_mask: ``[B, T]`` (a prefix of each row).
        index: ``[B]`` group keys; advantages: ``[B]`` the rows' GRPO advantages (signs).
    """
    valid = response_mask.bool()
    ids = response_ids.long()
    width = ids.shape[1]
    vocab = int(ids.max().item()) + 1 if ids.numel() else 1
    lengths = valid.sum(-1)  # [B]
    position = torch.arange(width).unsqueeze(0)  # [1, T]
    from_end = lengths.unsqueeze(-1) - 1 - position  # [B, T], negative past the end
    weights = torch.ones_like(response_mask, dtype=torch.float32)
    counts = torch.ones(len(ids), dtype=torch.long)
    group, n_groups = group_ids(index)
    for g in range(n_groups):
        rows = torch.nonzero(group == g).squeeze(-1)
        pos, neg = advantages[rows] > 0, advantages[rows] < 0
        v = valid[rows]
        fwd = _leading_run(_conflicts(position * vocab + ids[rows], v, pos, neg)) & v
        # the trailing run: padding counts as conflicting so the run can start at each row's last token
        bwd_raw = _conflicts(from_end[rows].clamp(min=0) * vocab + ids[rows], v, pos, neg) | ~v
        bwd = _leading_run(bwd_raw.flip(-1)).flip(-1) & v
        sign_weight = torch.where(pos, torch.tensor(float(conflict_weight)), torch.tensor(0.0)).unsqueeze(-1)
        delta = torch.where(fwd, sign_weight, 1.0) * torch.where(bwd, sign_weight, 1.0)
        active = (pos | neg).unsqueeze(-1)
        weights[rows] = torch.where(active, delta, 1.0) * v
        counts[rows] = (fwd | bwd).sum(-1).clamp(min=1)
    return weights, counts


@ADVANTAGE_ESTIMATORS.register("gtpo", GTPOParams, group_key="prompt", needs=("response_ids",),
                               token_stats=("entropy",))
def gtpo_advantage(batch: AdvantageInputs, params: GTPOParams) -> torch.Tensor:
    """GTPO's token advantage ``Â_i·δ(i, t)/n_i`` (module docstring); ``[B, T]``. Reads
    ``response_ids`` and the rollout policy's ``entropy`` token statistic."""
    batch.require("index", "response_ids", "token_stats")
    assert batch.index is not None and batch.response_ids is not None and batch.token_stats is not None  # require() raised otherwise
    if "entropy" not in batch.token_stats:
        raise ValueError("gtpo needs the 'entropy' token statistic")
    mask = batch.response_mask
    adv = group_normalized_scores(batch.scores, batch.index, params.epsilon, params.norm_by_std)  # [B]
    weights, counts = conflict_weights(batch.response_ids, mask, batch.index, adv, params.conflict_weight)
    mean_entropy = masked_mean(batch.token_stats["entropy"].to(adv.dtype), mask, dim=-1)  # [B]
    gated = torch.where(mean_entropy <= params.entropy_threshold, adv - params.entropy_penalty * mean_entropy,
                        torch.zeros_like(adv))
    scale = gated / counts.to(adv.dtype) if params.divide_by_conflicts else gated
    return scale.unsqueeze(-1) * weights.to(adv.dtype) * mask.to(adv.dtype)


__all__ = ["GTPOParams", "conflict_weights", "gtpo_advantage"]
