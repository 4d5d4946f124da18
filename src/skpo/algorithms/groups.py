"""Group keys → dense integer ids, and per-group statistics (vectorised with scatter ops)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch


def group_ids(index: Sequence[Hashable] | torch.Tensor | Any) -> tuple[torch.Tensor, int]:
    """Map group keys (uids, tuples, ints; list, numpy array or tensor) to ids ``0..K-1``
    in order of first appearance.

    Returns ``(ids[B] long, K)``.
    """
    if isinstance(index, torch.Tensor):
        keys = index.tolist()
    else:
        keys = list(index)
    mapping: dict[Hashable, int] = {}
    ids = [mapping.setdefault(_hashable(k), len(mapping)) for k in keys]
    return torch.tensor(ids, dtype=torch.long), len(mapping)


def _hashable(key: Any) -> Hashable:
    if isinstance(key, list):
        return tuple(_hashable(k) for k in key)
    if hasattr(key, "item") and getattr(key, "ndim", 1) == 0:
        return key.item()
    return key


def group_stats(
    scores: torch.Tensor, ids: torch.Tensor, num_groups: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-group count, mean and Bessel-corrected std of ``scores[B]``.

    Returns ``(count[K], mean[K], std[K])``; the std of a singleton group is NaN (callers
    decide what a singleton means).
    """
    dtype = scores.dtype
    count = torch.zeros(num_groups, dtype=dtype).index_add_(0, ids, torch.ones_like(scores))
    total = torch.zeros(num_groups, dtype=dtype).index_add_(0, ids, scores)
    mean = total / count
    sq_dev = (scores - mean[ids]) ** 2
    sum_sq = torch.zeros(num_groups, dtype=dtype).index_add_(0, ids, sq_dev)
    std = torch.sqrt(sum_sq / (count - 1))
    return count, mean, std
