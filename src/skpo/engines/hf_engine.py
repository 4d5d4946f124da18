"""A rollout engine over a Hugging Face causal LM, with shared-prefix KV reuse.

The whole story (sources, readings, how each step runs): ``docs/rollout.md``, section "Notes from skpo.engines.hf_engine"."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers.cache_utils import DynamicLayer

from skpo.engines.engine import (
    Completion,
    DecodeFn,
    SamplingParams,
    mix_seed,
    prompt_seeds,
    resolve_max_new_tokens,
)
from skpo.rows import pad_lists

__all__ = ["HFEngine", "autocast", "sample_from_logits", "left_pad"]


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """The context of every forward of the project: ``torch.autocast`` on ``device``'s type in
    ``dtype`` (no autocast when ``dtype`` is ``None`` or float32) and, on CUDA, attention without
    the cuDNN backend: cuDNN builds an execution plan for every new shape (measured on an H200
    with torch 2.11: ~55 ms of host time per decode step, where every step has a new key length,
    i.e. 90 % of a step), while the flash and memory-efficient kernels take any length."""
    kind = torch.device(device).type
    cast = contextlib.nullcontext() if dtype is None or dtype == torch.float32 else torch.autocast(device_type=kind, dtype=dtype)
    if kind != "cuda":
        return cast
    stack = contextlib.ExitStack()
    stack.enter_context(cast)
    stack.enter_context(sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]))
    return stack


def left_pad(
    seqs: Sequence[Sequence[int]], pad_token_id: int, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Left-pad token lists into a batch.

    Returns:
        input_ids ``[B, P]`` (``P`` = longest sequence), attention_mask ``[B, P]`` (1 on real
        tokens), position_ids ``[B, P]`` (0 at each row's first real token; 0 on pads too).
    """
    ids, mask = pad_lists(seqs, pad_token_id, left=True)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


SAMPLER_BLOCK = 1024  # vocabulary entries per block of the blocked sampler (149 blocks for Qwen2.5's 152,064)


def sample_from_logits(
    logits: Tensor, uniforms: Tensor | None, temperature: float, top_p: float, *, exact: bool | None = None
) -> tuple[Tensor, Tensor]:
    """Draw one token per row by inverse CDF, and its sampling log-prob.

    Args:
        logits: ``[A, V]`` next-token logits (any float dtype; computed in float32).
        uniforms: ``[A]`` values in ``[0, 1)``, one per row (unused when greedy).
        temperature: ``0`` = greedy.
        top_p: nucleus mass in ``(0, 1]``.
        exact: ``True``: the reference — the probabilities in float64 and one float64 cumulative
            sum over the whole vocabulary. ``False``: :func:`_blocked_inverse_cdf` — float32
            probabilities, float64 sums of blocks of :data:`SAMPLER_BLOCK` entries, and a
            cumulative sum inside the one chosen block. ``None`` (default): the reference on the
            CPU, the blocked sampler on CUDA. Every number the project ships on the CPU comes
            from the reference, so the CPU keeps it. On a GPU a cumulative sum along a
            152,064-entry row runs as one long sequential scan per row — the largest GPU kernel
            of a decode step on an H200 (docs/gpu_check) — while the blocked sampler's work on
            the whole vocabulary is one float32 ``exp`` and one reduction. It is exact enough:
            its CDF differs from the reference's only by the float32 rounding of each
            probability (~6e-8 relative), so the two pick different tokens only for a uniform
            within that rounding of a CDF boundary — measured 2 (1 with top-p) in 100,000
            draws on random logits over 152,064 entries (tests/test_hf_engine.py) — and, both inverting a
            CDF at the same ``u``, their distributions differ by at most that rate in total
            variation.

    Returns:
        tokens ``[A]`` (long) and logprobs ``[A]`` = ``log_softmax(logits / T)[token]``, taken
        before top-p truncation (untempered when greedy).
    """
    logits = logits.float()
    if temperature == 0.0:
        tokens = logits.argmax(dim=-1)
        logp = torch.log_softmax(logits, dim=-1)
        return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)
    if uniforms is None:
        raise ValueError("sampling needs uniforms")
    logp = torch.log_softmax(logits / temperature, dim=-1)  # [A, V]
    if exact is None:
        exact = logits.device.type != "cuda"
    order = None
    if top_p < 1.0:
        sorted_logp, order = logp.sort(dim=-1, descending=True)
    ranked = logp if order is None else sorted_logp  # [A, V], vocabulary order or most likely first
    idx = _inverse_cdf(ranked, uniforms, top_p) if exact else _blocked_inverse_cdf(ranked, uniforms, top_p)
    tokens = idx if order is None else order.gather(-1, idx[:, None]).squeeze(-1)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def _inverse_cdf(ranked_logp: Tensor, uniforms: Tensor, top_p: float) -> Tensor:
    """The reference: positions in ``ranked_logp`` ``[A, V]`` (most likely first when
    ``top_p < 1``) for ``uniforms`` ``[A]`` (or ``[A, K]``: ``K`` draws per row), by a float64
    cumulative sum over the whole row."""
    u = uniforms.reshape(uniforms.shape[0], -1)  # [A, K]
    probs = ranked_logp.double().exp()  # [A, V]
    if top_p >= 1.0:
        n_kept = torch.full((len(u), 1), ranked_logp.shape[-1], dtype=torch.long, device=u.device)
    else:
        mass_before = probs.cumsum(-1) - probs
        keep = mass_before < top_p  # smallest prefix whose mass reaches top_p
        keep[:, 0] = True
        probs = probs * keep
        n_kept = keep.sum(-1, keepdim=True)
    cdf = probs.cumsum(-1)  # [A, V] float64
    target = u.to(cdf) * cdf[:, -1:]
    # First index whose cdf exceeds the target: a token with non-zero probability.
    idx = torch.searchsorted(cdf, target, right=True)
    return torch.minimum(idx, n_kept - 1).reshape(uniforms.shape)  # guards the u·total == total rounding edge


def _blocked_inverse_cdf(ranked_logp: Tensor, uniforms: Tensor, top_p: float, block: int = SAMPLER_BLOCK) -> Tensor:
    """:func:`_inverse_cdf` in two levels, the same rule (the first CDF entry above
    ``u · total``; the top-p prefix: the entries whose mass before them is below ``top_p``), with
    the probabilities in float32 and cumulative sums only over the ``⌈V / block⌉`` block sums and
    inside the chosen block of each draw, all sums in float64."""
    A, V = ranked_logp.shape
    u = uniforms.reshape(A, -1)  # [A, K]
    block = min(block, V)
    n_blocks = -(-V // block)
    probs = ranked_logp.exp()  # [A, V] float32
    if n_blocks * block > V:
        probs = torch.nn.functional.pad(probs, (0, n_blocks * block - V))  # zeros: never picked
    blocks = probs.view(A, n_blocks, block)
    block_mass = blocks.sum(-1, dtype=torch.float64)  # [A, n_blocks]
    ends = block_mass.cumsum(-1)  # mass up to each block's end
    starts = ends - block_mass
    rows = torch.arange(A, device=ranked_logp.device)[:, None]

    def inside(b: Tensor) -> tuple[Tensor, Tensor]:  # b [A, K] → the blocks' entries and CDF [A, K, block]
        entries = blocks[rows, b].double()
        return entries, starts[rows, b][..., None] + entries.cumsum(-1)

    if top_p >= 1.0:
        n_kept = torch.full((A, 1), V, dtype=torch.long, device=u.device)
        total = ends[:, -1:]
    else:
        last = ((starts < top_p).sum(-1, keepdim=True) - 1).clamp(min=0)  # [A, 1]: holds the last kept entry
        entries, cdf = inside(last)
        in_block = (cdf - entries < top_p).sum(-1).clamp(min=1)
        n_kept = torch.clamp(last * block + in_block, max=V)
        total = cdf.gather(-1, (n_kept - 1 - last * block)[..., None]).squeeze(-1)
    target = u.to(torch.float64) * total  # [A, K]
    chosen = torch.searchsorted(ends, target, right=True).clamp(max=n_blocks - 1)
    within = torch.searchsorted(inside(chosen)[1], target[..., None], right=True).squeeze(-1).clamp(max=block - 1)
    return torch.minimum(chosen * block + within, n_kept - 1).reshape(uniforms.shape)


@dataclass
class _Row:
    """One (prompt, sample) pair of a call."""

    prompt: int  # index into the call's prompts
    sample: int  # j in 0..n-1
    max_new: int
    seed: int


class HFEngine:
    """:class:`~skpo.engines.engine.Engine` over a ``transformers`` causal LM.

    Args:
        model: a causal LM (``AutoModelForCausalLM``-style: ``forward(input_ids,
            attention_mask, position_ids, past_key_values, use_cache)`` returning ``logits``
            and ``past_key_values``). Put it on its device before; it is switched to eval mode
            during a call and restored after.
        pad_token_id: id used for left padding (never attended to).
        eos_token_id: stop token(s) always in force (like vLLM without ``ignore_eos``);
            ``SamplingParams.stop_token_ids`` adds more. ``None`` for none.
        decode: token ids → text, needed for stop strings.
        device: where inputs go; default: the model's first parameter's device.
        batch_size: most rows (prompt × sample) decoded together; bounds memory.
        share_prefix: prefill each prompt once and share its KV cache across its ``n``
            samples (default). ``False`` prefills every row separately (same results; for
            tests and benchmarks).
        autocast_dtype: run the model under ``torch.autocast`` in this dtype (``bfloat16`` /
            ``float16``): mixed-precision rollouts over float32 master weights, as a bf16
            inference engine would decode. ``None``: the weights' own dtype.
        between_batches: called after each batch of a :meth:`generate` call but its last; an
            exception it raises ends the call there (an evaluation stopping on a signal within
            one batch, however many batches one call holds).
        exact_sampling: the sampler (:func:`sample_from_logits`'s ``exact``): ``None`` picks by
            device (the float64 reference on the CPU, the blocked sampler on CUDA).
    """

    logprobs_after_top_p = False  # log_softmax(logits / T), before top-p (the protocol's)

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        pad_token_id: int,
        eos_token_id: int | Sequence[int] | None = None,
        decode: DecodeFn | None = None,
        device: torch.device | str | None = None,
        batch_size: int = 64,
        share_prefix: bool = True,
        autocast_dtype: torch.dtype | None = None,
        between_batches: Callable[[], None] | None = None,
        exact_sampling: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.pad_token_id = int(pad_token_id)
        if eos_token_id is None:
            self.eos_token_ids: list[int] = []
        elif isinstance(eos_token_id, int):
            self.eos_token_ids = [eos_token_id]
        else:
            self.eos_token_ids = [int(t) for t in eos_token_id]
        self.decode = decode
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.batch_size = batch_size
        self.share_prefix = share_prefix
        self.autocast_dtype = autocast_dtype
        self.between_batches = between_batches
        self.exact_sampling = exact_sampling
        params = inspect.signature(model.forward).parameters
        # Prefill only needs the last position's logits: [U, V] instead of [U, P, V].
        self._keeps_logits = "logits_to_keep" in params
        # A one-token decode step under sdpa needs no causal mask, only the padding mask:
        # handing it over as a ready [R, 1, 1, S] boolean mask skips the model's mask
        # construction at every step (~5 % of a small model's decode step on CPU).
        config = getattr(model, "config", None)
        self._ready_decode_mask = getattr(config, "_attn_implementation", None) == "sdpa"

    # ------------------------------------------------------------------ public API

    def generate(
        self,
        prompts: list[list[int]],
        n: int,
        params: SamplingParams,
        max_new_tokens: list[int] | None = None,
    ) -> list[list[Completion]]:
        """Sample ``n`` completions per prompt (see :meth:`skpo.engines.engine.Engine.generate`)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("prompts must hold at least one token")
        if params.stop and self.decode is None:
            raise ValueError("stop strings need an engine built with decode=")
        max_new = resolve_max_new_tokens(params, len(prompts), max_new_tokens)
        seeds = prompt_seeds(params.seed, len(prompts))
        out: list[list[Completion | None]] = [[None] * n for _ in prompts]

        rows: list[_Row] = []
        for i in sorted(range(len(prompts)), key=lambda i: -len(prompts[i])):
            for j in range(n):
                if max_new[i] == 0:
                    out[i][j] = Completion([], [], "length")
                else:
                    rows.append(_Row(i, j, max_new[i], mix_seed(seeds[i], j)))

        with _eval_mode(self.model), torch.inference_mode():
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                for row, completion in zip(chunk, self._generate_chunk(prompts, chunk, params)):
                    out[row.prompt][row.sample] = completion
                if self.between_batches is not None and start + self.batch_size < len(rows):
                    self.between_batches()
        return out  # type: ignore[return-value]

    def score(
        self,
        prompts: list[list[int]],
        completions: list[list[int]],
        temperature: float = 1.0,
    ) -> list[list[float]]:
        """Teacher-forced log-probs: ``out[i][t] = log_softmax(logits/T)[completions[i][t]]``.

        One prompt per completion. ``temperature == 0`` gives untempered log-probs (matching
        what greedy :meth:`generate` returns). Batched in chunks of ``batch_size``.
        """
        if len(prompts) != len(completions):
            raise ValueError("score needs one prompt per completion")
        temp = 1.0 if temperature == 0.0 else temperature
        out: list[list[float]] = [[] for _ in prompts]
        todo = [i for i in range(len(prompts)) if completions[i]]
        with _eval_mode(self.model), torch.inference_mode():
            for start in range(0, len(todo), self.batch_size):
                idx = todo[start : start + self.batch_size]
                seqs = [list(prompts[i]) + list(completions[i]) for i in idx]
                ids, mask, pos = left_pad(seqs, self.pad_token_id, self.device)
                # Completions end in the last column; keep logits for the longest one plus
                # the position before its first token.
                keep = max(len(completions[i]) for i in idx) + 1
                logits = self._forward(ids, mask, pos, None, keep)[0][:, :-1].float()
                logp = torch.log_softmax(logits / temp, dim=-1)  # [b, keep-1, V]
                for b, i in enumerate(idx):
                    c = len(completions[i])
                    target = torch.as_tensor(completions[i], device=logp.device)
                    row = logp[b, logp.shape[1] - c :].gather(-1, target[:, None]).squeeze(-1)
                    out[i] = row.tolist()
        return out

    # ------------------------------------------------------------------ internals

    def _forward(
        self, ids: Tensor, mask: Tensor, pos: Tensor, cache, logits_to_keep: int | None
    ) -> tuple[Tensor, Any]:  # (logits, the model's cache)
        kwargs = {}
        if logits_to_keep is not None and self._keeps_logits:
            kwargs["logits_to_keep"] = logits_to_keep
        with autocast(self.device, self.autocast_dtype):
            res = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
                **kwargs,
            )
        logits = res.logits
        if logits_to_keep is not None and logits.shape[1] > logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return logits, res.past_key_values

    def _generate_chunk(
        self, prompts: list[list[int]], rows: list[_Row], params: SamplingParams
    ) -> list[Completion]:
        dev = self.device
        R = len(rows)
        # --- prefill: one forward per unique prompt, then gather its KV for each row.
        if self.share_prefix:
            unique = list(dict.fromkeys(r.prompt for r in rows))
            slot = {p: u for u, p in enumerate(unique)}
            row_src = torch.tensor([slot[r.prompt] for r in rows], device=dev)
        else:
            unique = [r.prompt for r in rows]
            row_src = None
        ids, mask, pos = left_pad([prompts[p] for p in unique], self.pad_token_id, dev)
        logits, cache = self._forward(ids, mask, pos, None, 1)
        logits = logits[:, -1]  # [U, V]
        if row_src is not None:
            cache.reorder_cache(row_src)  # [U, h, P, d] -> [R, h, P, d] per layer
            logits, mask = logits[row_src], mask[row_src]
        next_pos = mask.sum(-1)  # [R] position of the first generated token = prompt length

        # --- per-row randomness, drawn up front so it cannot depend on the batch.
        max_new = torch.tensor([r.max_new for r in rows], device=dev)
        T = int(max_new.max())
        uniforms = None
        if not params.greedy:
            u = torch.zeros((R, T), dtype=torch.float64)
            for k, r in enumerate(rows):
                g = torch.Generator().manual_seed(r.seed)
                u[k, : r.max_new] = torch.rand(r.max_new, generator=g, dtype=torch.float64)
            uniforms = u.to(dev)

        eos = set() if params.ignore_eos else set(self.eos_token_ids)
        stop_ids = torch.tensor(sorted(eos | set(params.stop_token_ids)), dtype=torch.long, device=dev)
        tokens = torch.full((R, T), self.pad_token_id, dtype=torch.long, device=dev)
        logprobs = torch.zeros((R, T), dtype=torch.float32, device=dev)
        lengths = [0] * R
        reasons: list[tuple[str, int | str | None]] = [("length", None)] * R
        _preallocate(cache, extra=T)
        batch = torch.arange(R, device=dev)  # chunk rows in the decode batch
        batch_list = list(range(R))
        finished = [False] * R  # per batch position: done, kept in the batch until compaction
        n_finished = 0
        host_tokens: list[list[int]] = [[] for _ in range(R)]  # only for stop strings
        window = 4 * max((len(s) for s in params.stop), default=0) + 4

        for t in range(T):
            u_t = None if uniforms is None else uniforms[batch, t]
            tok, lp = sample_from_logits(logits, u_t, params.temperature, params.top_p, exact=self.exact_sampling)
            # finished rows still in the batch write past their length here: sliced off below
            tokens[batch, t] = tok
            logprobs[batch, t] = lp
            hit_stop = torch.isin(tok, stop_ids)  # [A]
            done = (hit_stop | (max_new[batch] <= t + 1)).tolist()
            stop_tok = hit_stop.tolist()
            tok_list: list[int] | None = None
            hit_str: dict[int, str] = {}  # batch position -> stop string it completed
            if params.stop:  # stop strings are matched on the host, on a tail window
                assert self.decode is not None  # (generate refuses stop strings without it)
                tok_list = tok.tolist()
                for a, k in enumerate(batch_list):
                    if finished[a]:
                        continue
                    host_tokens[k].append(tok_list[a])
                    if not stop_tok[a]:
                        text = self.decode(host_tokens[k][-window:])
                        hit = next((s for s in params.stop if s in text), None)
                        if hit is not None:
                            hit_str[a], done[a] = hit, True
            for a, k in enumerate(batch_list):
                if done[a] and not finished[a]:
                    finished[a] = True
                    n_finished += 1
                    lengths[k] = t + 1
                    if stop_tok[a]:
                        tok_list = tok_list if tok_list is not None else tok.tolist()
                        reasons[k] = ("stop", tok_list[a])
                    elif a in hit_str:
                        reasons[k] = ("stop", hit_str[a])
            if n_finished == len(batch_list):
                break
            if n_finished * 8 >= len(batch_list):
                # Drop finished rows (and their cache rows) once they are an eighth of the
                # batch: each drop copies the cache, each kept row costs a row of compute.
                keep = [a for a in range(len(batch_list)) if not finished[a]]
                keep_t = torch.tensor(keep, device=dev)
                cache.batch_select_indices(keep_t)
                batch, tok, mask, next_pos = batch[keep_t], tok[keep_t], mask[keep_t], next_pos[keep_t]
                batch_list = [batch_list[a] for a in keep]
                finished, n_finished = [False] * len(keep), 0
            mask = torch.cat([mask, mask.new_ones((len(batch_list), 1))], dim=1)
            step_mask = mask.bool()[:, None, None, :] if self._ready_decode_mask else mask
            logits, cache = self._forward(tok[:, None], step_mask, next_pos[:, None], cache, 1)
            logits = logits[:, -1]
            next_pos = next_pos + 1

        tokens_host, logprobs_host = tokens.cpu().tolist(), logprobs.cpu().tolist()
        return [
            Completion(
                token_ids=tokens_host[k][: lengths[k]],
                logprobs=logprobs_host[k][: lengths[k]],
                finish_reason=reasons[k][0],  # type: ignore[arg-type]
                stop_reason=reasons[k][1],
            )
            for k in range(R)
        ]


class _PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values live in buffers with room for the whole
    decode. Appending a token writes in place; ``DynamicLayer`` instead concatenates, i.e.
    copies and reallocates the whole cache of every layer at every step, which on CPU was a
    third of a decode step's time. ``keys`` / ``values`` are views of the filled part, so
    everything that reads them (attention, masks, ``get_seq_length``) sees a normal layer."""

    keys: Tensor  # (always set: views of the buffers)
    values: Tensor

    def __init__(self, keys: Tensor, values: Tensor, capacity: int) -> None:
        super().__init__()
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        b, h, n, d = keys.shape
        self._k = keys.new_empty(b, h, max(capacity, n), d)
        self._v = values.new_empty(b, values.shape[1], max(capacity, n), values.shape[-1])
        self._k[:, :, :n], self._v[:, :, :n] = keys, values
        self._n = n
        self._expose()

    def _expose(self) -> None:
        self.keys, self.values = self._k[:, :, : self._n], self._v[:, :, : self._n]

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        n = key_states.shape[-2]
        if self._n + n > self._k.shape[2]:  # out of room: grow like a list
            grow = max(self._n + n, 2 * self._k.shape[2])
            self._k = torch.cat([self._k, self._k.new_empty(*self._k.shape[:2], grow - self._k.shape[2], self._k.shape[3])], 2)
            self._v = torch.cat([self._v, self._v.new_empty(*self._v.shape[:2], grow - self._v.shape[2], self._v.shape[3])], 2)
        self._k[:, :, self._n : self._n + n] = key_states
        self._v[:, :, self._n : self._n + n] = value_states
        self._n += n
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._n

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        self._n = max(0, self._n + tokens_to_remove)
        self._expose()

    def batch_select_indices(self, indices: Tensor) -> None:
        self._k, self._v = self._k[indices], self._v[indices]
        self._expose()

    def reorder_cache(self, beam_idx: Tensor) -> None:
        self.batch_select_indices(beam_idx.to(self._k.device))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._k, self._v = self._k.repeat_interleave(repeats, 0), self._v.repeat_interleave(repeats, 0)
        self._expose()


def _preallocate(cache, extra: int) -> None:
    """Swap the plain ``DynamicLayer``s of a prefilled cache for preallocated ones with room
    for ``extra`` more tokens (other layer kinds, e.g. sliding windows, are left alone)."""
    layers = getattr(cache, "layers", None)
    if not layers:
        return
    for i, layer in enumerate(layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys is not None and layer.keys.numel():
            assert layer.values is not None  # (set with the keys)
            layers[i] = _PreallocatedLayer(layer.keys, layer.values, layer.keys.shape[-2] + extra)


class _eval_mode:
    """Context manager: eval mode inside, the model's previous mode restored after."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)
