"""Rows of one role (response / upstream / downstream) and the teacher-forced forward pass.

A ``Rows`` record holds, for ``B`` rows: the conditioning input of each row (token lists),
the responses ``[B, T]`` (left-aligned, right-padded) with ``response_mask``, the sampling
log-probs ``[B, T]``, the outcome reward ``[B]`` and the group keys — the same layout as the
SKPO rollout's ``UpstreamRows`` / ``DownstreamRows``, so all three flow through one path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import torch
from torch import Tensor

from skpo.algorithms import entropy_from_logits, logprobs_from_logits


@dataclass
class Rows:
    prompt_ids: list[list[int]]
    response_ids: Tensor  # [B, T] long
    response_mask: Tensor  # [B, T] float
    old_log_probs: Tensor  # [B, T] sampling log-probs (float32)
    rewards: Tensor  # [B]
    index: list[Hashable]
    segment_index: list[Hashable] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def lengths(self) -> Tensor:
        return self.response_mask.sum(-1).long()

    def select(self, rows: Sequence[int]) -> "Rows":
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        pick = lambda xs: [xs[i] for i in rows]  # noqa: E731
        extra = {k: (v[idx] if isinstance(v, Tensor) and v.shape[:1] == self.rewards.shape else v) for k, v in self.extra.items()}
        return Rows(
            pick(self.prompt_ids), self.response_ids[idx], self.response_mask[idx], self.old_log_probs[idx],
            self.rewards[idx], pick(self.index), None if self.segment_index is None else pick(self.segment_index), extra,
        )


def pad_responses(responses: Sequence[Sequence[int]], log_probs: Sequence[Sequence[float]], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Token lists → ``(ids [B, T], mask [B, T], log_probs [B, T])``, right-padded (T ≥ 1)."""
    width = max([len(r) for r in responses] + [1])
    ids = torch.full((len(responses), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(responses), width)
    lps = torch.zeros(len(responses), width)
    for b, (r, lp) in enumerate(zip(responses, log_probs)):
        if r:
            ids[b, : len(r)] = torch.as_tensor(list(r))
            mask[b, : len(r)] = 1
            lps[b, : len(r)] = torch.as_tensor(list(lp), dtype=torch.float32)
    return ids, mask, lps


def last_token_rewards(rewards: Tensor, response_mask: Tensor) -> Tensor:
    """``[B]`` → ``[B, T]`` with each reward on the row's last valid token (verl's layout)."""
    out = torch.zeros_like(response_mask, dtype=torch.float32)
    last = (response_mask.sum(-1).long() - 1).clamp(min=0)
    out[torch.arange(len(rewards)), last] = rewards.float()
    return out


def policy_forward(
    model: torch.nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Tensor,
    response_mask: Tensor,
    pad_id: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Teacher-forced log π(response token) ``[B, T]`` (and entropy ``[B, T]``).

    Each row ``prompt + response`` is left-padded as a whole, so every response ends at the
    last column; only the final ``T + 1`` logits are computed (``logits_to_keep``) and then
    re-aligned to the left-aligned response layout. Log-probs use ``logits / temperature``
    like the engine's sampling log-probs.
    """
    device = next(model.parameters()).device
    lengths = response_mask.sum(-1).long().tolist()
    rows = [list(p) + response_ids[b, : lengths[b]].tolist() for b, p in enumerate(prompt_ids)]
    width = max(len(r) for r in rows)
    bsz, t = response_ids.shape
    input_ids = torch.full((bsz, width), pad_id, dtype=torch.long)
    attn = torch.zeros(bsz, width, dtype=torch.long)
    for b, r in enumerate(rows):
        input_ids[b, width - len(r) :] = torch.as_tensor(r)
        attn[b, width - len(r) :] = 1
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    keep = min(t + 1, width)
    out = model(
        input_ids=input_ids.to(device), attention_mask=attn.to(device), position_ids=positions.to(device),
        logits_to_keep=keep, use_cache=False,
    )
    logits = out.logits[:, -keep:-1] if keep > 1 else out.logits[:, :0]  # predicts the last keep-1 tokens
    window = logits.shape[1]
    # response token j of row b sits at window column window - len_b + j
    cols = torch.arange(t).unsqueeze(0) + (window - torch.tensor(lengths)).unsqueeze(1)
    valid = (torch.arange(t).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)) & (cols >= 0)
    cols = cols.clamp(0, max(window - 1, 0)).to(device)
    gathered = torch.gather(logits, 1, cols.unsqueeze(-1).expand(-1, -1, logits.shape[-1])) if window else logits.new_zeros(bsz, t, logits.shape[-1])
    if temperature not in (0.0, 1.0):
        gathered = gathered / temperature
    log_probs = logprobs_from_logits(gathered, response_ids.to(device)) * valid.to(device)
    entropy = entropy_from_logits(gathered) * valid.to(device) if with_entropy else None
    return log_probs, entropy


def length_buckets(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Group row indices into micro-batches of similar length whose padded size
    (rows × longest row) stays within ``token_budget`` (a row longer than the budget goes alone).
    Sorting by length first is what keeps padding from dominating."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = max([lengths[j] for j in current] + [lengths[i]])
        if current and longest * (len(current) + 1) > token_budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
