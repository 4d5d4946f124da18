"""The teacher-forced forward pass over rows: per-token log-probs (and entropies) of the
responses given their conditioning inputs, padded or packed (several rows in one sequence with
per-row positions, when the model's attention supports it), and the length buckets that keep a
micro-batch within a token budget."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import cast, overload

import torch
from torch import Tensor

from skpo.algorithms import entropy_from_logits, logprobs_from_logits
from skpo.rows import Rows, pad_lists

MicroBatches = Sequence[tuple[Sequence[int], Sequence[Sequence[int]] | None]]  # (row indices, packs) per forward


@overload
def policy_forward(
    model: torch.nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Tensor,
    response_mask: Tensor,
    pad_id: int,
    temperature: float = ...,
    with_entropy: bool = ...,
    packs: Sequence[Sequence[int]] | None = ...,
    reductions: None = ...,
) -> tuple[Tensor, Tensor | None]: ...


@overload
def policy_forward(
    model: torch.nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Tensor,
    response_mask: Tensor,
    pad_id: int,
    temperature: float = ...,
    with_entropy: bool = ...,
    packs: Sequence[Sequence[int]] | None = ...,
    *,
    reductions: Callable[[Tensor, Tensor], dict[str, Tensor]],
) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]: ...


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
    bsz, t = response_ids.shape
    input_ids, attn = pad_lists(rows, pad_id, left=True)
    width = input_ids.shape[1]
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


@torch.no_grad()
def no_grad_forward(
    model: torch.nn.Module,
    rows: Rows,
    micro_batches: MicroBatches,
    pad_id: int,
    temperature: float = 1.0,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    reductions: Callable[[Tensor, Tensor], dict[str, Tensor]] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The one forward without gradient over rows: ``model`` in eval mode (its mode restored
    after), one :func:`policy_forward` per micro-batch ``(row indices, packs)`` under
    ``autocast()``. Every log-prob pass outside the update runs through it (π_old and reference
    log-probs, token statistics, the drift measure, reward models).

    Returns:
        log-probs ``[B, T]`` float32 on the CPU (0 past each response and on rows in no
        micro-batch), and ``reductions``' statistics ``{name: [B, T]}`` (empty without them).
    """
    log_probs = torch.zeros(rows.response_mask.shape, dtype=torch.float32)
    stats: dict[str, Tensor] = {}
    was_training = model.training
    model.eval()
    try:
        for bucket, packs in micro_batches:
            sub, idx = rows.select(bucket), torch.tensor(list(bucket), dtype=torch.long)
            with autocast():
                out = policy_forward(model, sub.prompt_ids, sub.response_ids, sub.response_mask, pad_id, temperature,
                                     packs=packs, reductions=reductions)
            log_probs[idx] = out[0].float().cpu()
            extra = cast("tuple[Tensor, Tensor | None, dict[str, Tensor]]", out)[2] if reductions is not None else {}
            for name, values in extra.items():
                stats.setdefault(name, torch.zeros(rows.response_mask.shape, dtype=torch.float32))[idx] = values.float().cpu()
    finally:
        model.train(was_training)
    return log_probs, stats


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
        packs.append(ids)
        segs.append(seg)
        positions.append(pos)
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
                packs.append(current)
                pack_len.append(size)
                current, size = [], n_prompt
            current.append(b)
            size += lengths[b]
        if current:
            packs.append(current)
            pack_len.append(size)
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
