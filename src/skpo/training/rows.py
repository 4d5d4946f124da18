"""The one row record from rollout to loss, and the teacher-forced forward pass.

A ``Rows`` record holds, for ``B`` rows of any roles: the conditioning input of each row (token
lists), the responses ``[B, T]`` (left-aligned, right-padded) with ``response_mask``, the
sampling log-probs ``[B, T]``, the outcome reward ``[B]``, the group keys, the role of each row
(``response``, or SKPO's ``upstream`` / ``downstream`` — whatever the rollout kind produces),
and what later phases attach: advantages ``[B, T]``, reference log-probs ``[B, T]``, and
per-row extras (Monte Carlo step values). Phases return new records (:meth:`Rows.replace`)
instead of changing a shared one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

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
    extra: dict[str, Any] = field(default_factory=dict)  # per-row tensors [B, ...] (step values)
    role: list[str] | None = None  # [B] role of each row (None: all "response")
    advantages: Tensor | None = None  # [B, T]
    ref_log_probs: Tensor | None = None  # [B, T]

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def lengths(self) -> Tensor:
        return self.response_mask.sum(-1).long()

    def roles(self) -> list[str]:
        """The role of every row (``response`` when none was given)."""
        return self.role if self.role is not None else ["response"] * len(self)

    def rows_of(self, role: str) -> list[int]:
        """Indices of the rows of ``role``, in order."""
        return [b for b, r in enumerate(self.roles()) if r == role]

    def replace(self, **changes: Any) -> "Rows":
        """A new record with ``changes`` (the others shared, not copied)."""
        return dataclasses.replace(self, **changes)

    def select(self, rows: Sequence[int]) -> "Rows":
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        pick = lambda xs: None if xs is None else [xs[i] for i in rows]  # noqa: E731
        tensor = lambda x: None if x is None else x[idx]  # noqa: E731
        extra = {k: (v[idx] if isinstance(v, Tensor) and v.shape[:1] == self.rewards.shape else v) for k, v in self.extra.items()}
        return Rows(
            pick(self.prompt_ids), self.response_ids[idx], self.response_mask[idx], self.old_log_probs[idx],
            self.rewards[idx], pick(self.index), pick(self.segment_index), extra, pick(self.role),
            tensor(self.advantages), tensor(self.ref_log_probs),
        )


def concat_rows(parts: Sequence[Rows], pad_id: int, roles: Sequence[str] | None = None) -> Rows:
    """Rows of several parts (roles, or ranks) as one record, responses right-padded to the
    widest part; each part's rows get its role from ``roles`` (default: the part's own).
    Segment keys are kept (``None`` for parts without them). Per-row extras, advantages and
    reference log-probs are joined when every part has them (trailing dimensions padded with
    zeros); an extra some parts lack is an error."""
    width = max(p.response_ids.shape[1] for p in parts)
    extra_keys = [set(p.extra) for p in parts]
    if len(parts) > 1 and any(keys != extra_keys[0] for keys in extra_keys):
        raise ValueError(f"concat_rows: parts carry different per-row extras ({[sorted(k) for k in extra_keys]})")

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
    has_segments = any(p.segment_index is not None for p in parts)
    return Rows(
        [list(q) for p in parts for q in p.prompt_ids],
        torch.cat([widen(p.response_ids, pad_id) for p in parts]),
        torch.cat([widen(p.response_mask, 0.0) for p in parts]),
        torch.cat([widen(p.old_log_probs, 0.0) for p in parts]),
        torch.cat([p.rewards.float() for p in parts]),
        [k for p in parts for k in p.index],
        [s for p in parts for s in (p.segment_index or [None] * len(p))] if has_segments else None,
        {k: joined([p.extra[k] for p in parts]) for k in parts[0].extra},
        [r for roles_ in role_lists for r in roles_],
        optional("advantages"),
        optional("ref_log_probs"),
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
    packs: Sequence[Sequence[int]] | None = None,
    reductions: Callable[[Tensor, Tensor], dict[str, Tensor]] | None = None,
) -> tuple[Tensor, Tensor | None] | tuple[Tensor, Tensor | None, dict[str, Tensor]]:
    """Teacher-forced log π(response token) ``[B, T]`` (and entropy ``[B, T]``).

    ``reductions``: a callable ``(logits [B, T, V], labels [B, T]) -> {name: [B, T]}`` evaluated
    on the same (temperature-scaled) logits — the token statistics of
    :mod:`skpo.algorithms.token_stats`; when given, its results (0 past each response) come
    back as a third element.

    Two layouts, same numbers (to float rounding; ``tests/test_rows.py``):

    - **Packed** (``packs`` given: lists of row indices with the same prompt, e.g.
      ``group_by_prompt(prompt_ids)``; sdpa or eager attention): the rows of one pack
      become one sequence ``[prompt, o_1, …, o_k]`` under a tree-shaped attention mask — ``o_j`` sees the prompt and its own earlier tokens only, and its
      positions restart at ``len(prompt)``. The prompt is encoded once per group instead of
      ``G`` times and responses carry no padding: on a group of 8 answers from a 17-token
      prompt (the embedded default) that is ~30 % fewer tokens through the model; SKPO's
      downstream prefix ``[s, q]`` is longer, so it saves more.
    - **Rows**: each row ``prompt + response`` is left-padded as a whole, so every response
      ends at the last column; only the final ``T + 1`` logits are computed
      (``logits_to_keep``) and re-aligned to the left-aligned response layout.

    Log-probs use ``logits / temperature`` like the engine's sampling log-probs.
    """
    if packs is not None:
        return _packed_forward(model, prompt_ids, response_ids, response_mask, temperature, with_entropy, packs,
                               reductions)
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
    if reductions is not None:
        stats = {k: v * valid.to(device) for k, v in reductions(gathered, response_ids.to(device)).items()}
        return log_probs, entropy, stats
    return log_probs, entropy


def _attn_implementation(model: torch.nn.Module) -> str | None:
    model = getattr(model, "module", model)  # DDP-wrapped
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


def can_pack(model: torch.nn.Module) -> bool:
    """Tree masks are passed as a ready 4D mask, which sdpa and eager attention accept."""
    return _attn_implementation(model) in ("sdpa", "eager")


def group_by_prompt(prompt_ids: Sequence[Sequence[int]]) -> list[list[int]]:
    """Row indices grouped by identical prompt, in order of first appearance."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for b, p in enumerate(prompt_ids):
        groups.setdefault(tuple(p), []).append(b)
    return list(groups.values())


def _packed_forward(model, prompt_ids, response_ids: Tensor, response_mask: Tensor, temperature: float,
                    with_entropy: bool, groups: Sequence[Sequence[int]], reductions=None):
    """``policy_forward`` with each prompt group packed into one tree-masked sequence."""
    device = next(model.parameters()).device
    bsz, t = response_ids.shape
    lengths = response_mask.sum(-1).long().tolist()
    if sorted(b for g in groups for b in g) != list(range(bsz)):
        raise ValueError("packs must hold every row exactly once")
    if any(tuple(prompt_ids[b]) != tuple(prompt_ids[g[0]]) for g in groups for b in g):
        raise ValueError("the rows of a pack must share their prompt")
    packs: list[list[int]] = []  # token ids of each packed sequence
    segs: list[list[int]] = []  # 0 = prompt, j+1 = response j, <0 = a pad (attends to itself)
    positions: list[list[int]] = []
    src_pack = torch.zeros(bsz, dtype=torch.long)
    src_col = torch.zeros(bsz, t, dtype=torch.long)  # column whose logits predict token (b, t)
    for g, rows in enumerate(groups):
        prompt = list(prompt_ids[rows[0]])
        n_prompt = len(prompt)
        ids, seg, pos = list(prompt), [0] * n_prompt, list(range(n_prompt))
        for j, b in enumerate(rows):
            n = lengths[b]
            start = len(ids)
            ids += response_ids[b, :n].tolist()
            seg += [j + 1] * n
            pos += range(n_prompt, n_prompt + n)
            src_pack[b] = g
            # token 0 is predicted by the last prompt column, token k by the response's k-1
            cols = torch.arange(start - 1, start - 1 + t)
            cols[0] = n_prompt - 1
            src_col[b] = cols.clamp(max=max(start + n - 2, n_prompt - 1))
        packs.append(ids), segs.append(seg), positions.append(pos)
    width = max(len(x) for x in packs)
    input_ids = torch.zeros(len(packs), width, dtype=torch.long)
    seg_t = -1 - torch.arange(width).repeat(len(packs), 1)  # pads: unique negative ids
    pos_t = torch.zeros(len(packs), width, dtype=torch.long)
    for g, (ids, seg, pos) in enumerate(zip(packs, segs, positions)):
        input_ids[g, : len(ids)] = torch.as_tensor(ids)
        seg_t[g, : len(seg)] = torch.as_tensor(seg)
        pos_t[g, : len(pos)] = torch.as_tensor(pos)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    key_seg, query_seg = seg_t[:, None, :], seg_t[:, :, None]
    allowed = causal & ((key_seg == 0) | (key_seg == query_seg))  # [P, L, L]
    if _attn_implementation(model) == "eager":
        dtype = next(model.parameters()).dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
    else:
        mask = allowed[:, None]
    out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), position_ids=pos_t.to(device),
                use_cache=False)
    logits = out.logits[src_pack.to(device)[:, None], src_col.to(device)]  # [B, T, V]
    if temperature not in (0.0, 1.0):
        logits = logits / temperature
    valid = (torch.arange(t).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).to(device)
    log_probs = logprobs_from_logits(logits, response_ids.to(device)) * valid
    entropy = entropy_from_logits(logits) * valid if with_entropy else None
    if reductions is not None:
        return log_probs, entropy, {k: v * valid for k, v in reductions(logits, response_ids.to(device)).items()}
    return log_probs, entropy


def pack_buckets(
    prompt_ids: Sequence[Sequence[int]], lengths: Sequence[int], token_budget: int, pack_max_tokens: int
) -> list[tuple[list[int], list[list[int]] | None]]:
    """Micro-batches ``(rows, packs)`` for the packed layout (``packs``: positions within
    ``rows`` of each packed sequence, for :func:`policy_forward`; ``None`` = padded rows).

    Each prompt group is cut into packs ``[prompt, o_1, …, o_k]`` of at most
    ``pack_max_tokens`` tokens (responses taken longest first; a pack's prompt is encoded once
    for its k answers). The cap exists because a tree mask makes attention dense over the
    whole pack — quadratic in its length — so beyond a few hundred tokens the saved prompt
    tokens no longer pay for it. A response that does not fit in a pack even alone goes to
    row buckets (``packs=None``, see ``length_buckets``). Packs are then bucketed like
    rows: sorted by length, packs × longest pack within ``token_budget``.
    """
    packs: list[list[int]] = []
    pack_len: list[int] = []
    loose: list[int] = []
    for group in group_by_prompt(prompt_ids):
        n_prompt = len(prompt_ids[group[0]])
        current: list[int] = []
        size = n_prompt
        for b in sorted(group, key=lambda b: -lengths[b]):
            if n_prompt + lengths[b] > pack_max_tokens:
                loose.append(b)
                continue
            if current and size + lengths[b] > pack_max_tokens:
                packs.append(current), pack_len.append(size)
                current, size = [], n_prompt
            current.append(b)
            size += lengths[b]
        if current:
            packs.append(current), pack_len.append(size)
    out: list[tuple[list[int], list[list[int]] | None]] = []
    for bucket in length_buckets(pack_len, token_budget):
        rows = [b for i in bucket for b in packs[i]]
        where = {b: k for k, b in enumerate(rows)}
        out.append((rows, [[where[b] for b in packs[i]] for i in bucket]))
    if loose:
        row_lengths = [len(prompt_ids[b]) + lengths[b] for b in loose]
        out += [([loose[i] for i in bucket], None) for bucket in length_buckets(row_lengths, token_budget)]
    return out


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
