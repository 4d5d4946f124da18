"""The one row record from rollout to loss (the teacher-forced forward over it is
:mod:`skpo.models.forward`).

A ``Rows`` record holds, for ``B`` rows of any roles: the conditioning input of each row (token
lists), the responses ``[B, T]`` (left-aligned, right-padded) with ``response_mask``, the
sampling log-probs ``[B, T]``, the outcome reward ``[B]``, the group keys, the role of each row
(``response``, or SKPO's ``upstream`` / ``downstream`` — whatever the rollout kind produces),
and what later phases attach: advantages ``[B, T]``, reference log-probs ``[B, T]``, per-row
inputs of estimators (``extra``: Monte Carlo step values, a reward model's outputs), the
policy's token statistics (``token_stats``) and the estimators' outputs for their losses
(``estimator_outputs``), each a typed field of its own. Phases return new records
(:meth:`Rows.replace`) instead of changing a shared one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class Rows:
    prompt_ids: list[list[int]]
    response_ids: Tensor  # [B, T] long
    response_mask: Tensor  # [B, T] float
    old_log_probs: Tensor  # [B, T] sampling log-probs (float32)
    rewards: Tensor  # [B]
    prompt_keys: Sequence[Hashable]  # [B] the key of the prompt each row answers (PromptItem.key)
    group: Sequence[Hashable | None] | None = None  # [B] group id per row (None: the row's prompt key)
    extra: dict[str, Any] = field(default_factory=dict)  # per-row estimator inputs [B, ...] (step values)
    role: list[str] | None = None  # [B] role of each row (None: all "response")
    advantages: Tensor | None = None  # [B, T]
    ref_log_probs: Tensor | None = None  # [B, T]
    # name → [B, T]: the rollout policy's token statistics (skpo.algorithms.token_stats)
    token_stats: dict[str, Tensor] = field(default_factory=dict)
    # name → [B, T]: what the advantage estimators hand to their losses (AdvantageInputs.outputs)
    estimator_outputs: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def lengths(self) -> Tensor:
        return self.response_mask.sum(-1).long()

    def roles(self) -> list[str]:
        """The role of every row (``response`` when none was given)."""
        return self.role if self.role is not None else ["response"] * len(self)

    def groups(self) -> list[Hashable]:
        """The group id of every row: the rollout kind's (SKPO's downstream answers: their
        ``[s, q]``), else the row's prompt key."""
        if self.group is None:
            return list(self.prompt_keys)
        return [k if g is None else g for g, k in zip(self.group, self.prompt_keys)]

    def rows_of(self, role: str) -> list[int]:
        """Indices of the rows of ``role``, in order."""
        return [b for b, r in enumerate(self.roles()) if r == role]

    def replace(self, **changes: Any) -> Rows:
        """A new record with ``changes`` (the others shared, not copied)."""
        return dataclasses.replace(self, **changes)

    def select(self, rows: Sequence[int]) -> Rows:
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        pick = lambda xs: None if xs is None else [xs[i] for i in rows]  # noqa: E731
        tensor = lambda x: None if x is None else x[idx]  # noqa: E731
        extra = {k: (v[idx] if isinstance(v, Tensor) and v.shape[:1] == self.rewards.shape else v) for k, v in self.extra.items()}
        return Rows(
            [self.prompt_ids[i] for i in rows], self.response_ids[idx], self.response_mask[idx], self.old_log_probs[idx],
            self.rewards[idx], [self.prompt_keys[i] for i in rows], pick(self.group), extra, pick(self.role),
            tensor(self.advantages), tensor(self.ref_log_probs),
            {k: v[idx] for k, v in self.token_stats.items()}, {k: v[idx] for k, v in self.estimator_outputs.items()},
        )


def concat_rows(parts: Sequence[Rows], pad_id: int, roles: Sequence[str] | None = None) -> Rows:
    """Rows of several parts (roles, or ranks) as one record, responses right-padded to the
    widest part; each part's rows get its role from ``roles`` (default: the part's own).
    Group ids are kept (``None`` for parts without them). Per-row extras, advantages and
    reference log-probs are joined when every part has them (trailing dimensions padded with
    zeros), and so are token statistics and estimator outputs; a name some parts lack is an error."""
    width = max(p.response_ids.shape[1] for p in parts)
    for channel in ("extra", "token_stats", "estimator_outputs"):
        keys = [set(getattr(p, channel)) for p in parts]
        if len(parts) > 1 and any(k != keys[0] for k in keys):
            raise ValueError(f"concat_rows: parts carry different {channel} ({[sorted(k) for k in keys]})")

    def widen(x: Tensor, fill: float) -> Tensor:
        return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=fill)

    def joined(values: list[Any]) -> Any:
        if not all(isinstance(v, Tensor) for v in values):
            return values[0]
        shape = [max(v.shape[d] for v in values) for d in range(1, values[0].dim())]
        padded = []
        for v in values:
            pad: list[int] = []
            for d in reversed(range(1, v.dim())):
                pad += [0, shape[d - 1] - v.shape[d]]
            padded.append(torch.nn.functional.pad(v, pad) if any(pad) else v)
        return torch.cat(padded)

    def optional(name: str) -> Tensor | None:
        values = [getattr(p, name) for p in parts]
        if all(v is None for v in values):
            return None
        if any(v is None for v in values):
            raise ValueError(f"concat_rows: only some parts have {name}")
        return torch.cat([widen(v, 0.0) for v in values])

    role_lists = [[r] * len(p) for p, r in zip(parts, roles)] if roles is not None else [p.roles() for p in parts]
    has_groups = any(p.group is not None for p in parts)
    return Rows(
        [list(q) for p in parts for q in p.prompt_ids],
        torch.cat([widen(p.response_ids, pad_id) for p in parts]),
        torch.cat([widen(p.response_mask, 0.0) for p in parts]),
        torch.cat([widen(p.old_log_probs, 0.0) for p in parts]),
        torch.cat([p.rewards.float() for p in parts]),
        [k for p in parts for k in p.prompt_keys],
        [g for p in parts for g in (p.group or [None] * len(p))] if has_groups else None,
        {k: joined([p.extra[k] for p in parts]) for k in parts[0].extra},
        [r for roles_ in role_lists for r in roles_],
        optional("advantages"),
        optional("ref_log_probs"),
        {k: joined([p.token_stats[k] for p in parts]) for k in parts[0].token_stats},
        {k: joined([p.estimator_outputs[k] for p in parts]) for k in parts[0].estimator_outputs},
    )


def pad_lists(lists: Sequence[Sequence[float]], fill: float, dtype: torch.dtype = torch.long, width: int | None = None,
              left: bool = False) -> tuple[Tensor, Tensor]:
    """The one padding helper: lists of token ids (or floats) → ``(values [B, W], mask [B, W])``.

    Each list starts at column 0 and is right-padded with ``fill`` (``left=True``: ends at the
    last column, left-padded — prompts for generation or a teacher-forced forward). ``W`` is
    ``width`` or the longest list (at least 1); ``mask`` is long, 1 on the lists' entries."""
    longest = max((len(x) for x in lists), default=0)
    width = max(1, longest) if width is None else width
    if longest > width:
        raise ValueError(f"a list of {longest} entries does not fit width {width}")
    values = torch.full((len(lists), width), fill, dtype=dtype)
    mask = torch.zeros((len(lists), width), dtype=torch.long)
    for b, x in enumerate(lists):
        if len(x):
            cols = slice(width - len(x), width) if left else slice(0, len(x))
            values[b, cols] = torch.as_tensor(list(x), dtype=dtype)
            mask[b, cols] = 1
    return values, mask


def pad_responses(responses: Sequence[Sequence[int]], log_probs: Sequence[Sequence[float]], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Token lists → ``(ids [B, T], mask [B, T], log_probs [B, T])``, right-padded (T ≥ 1)."""
    ids, mask = pad_lists(responses, pad_id)
    lps, _ = pad_lists(log_probs, 0.0, torch.float32, width=ids.shape[1])
    return ids, mask.float(), lps


def last_token_rewards(rewards: Tensor, response_mask: Tensor) -> Tensor:
    """``[B]`` → ``[B, T]`` with each reward on the row's last valid token (verl's layout)."""
    out = torch.zeros_like(response_mask, dtype=torch.float32)
    last = (response_mask.sum(-1).long() - 1).clamp(min=0)
    out[torch.arange(len(rewards)), last] = rewards.float()
    return out
