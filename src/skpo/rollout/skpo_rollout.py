"""SKPO's two-phase rollout (reference §1.3–§1.4), on token ids.

The whole story (sources, readings, how each step runs): ``docs/skpo-rollout.md``, section "Notes from skpo.rollout.skpo_rollout"."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from skpo.algorithms.advantages import skpo_downstream_index
from skpo.algorithms.trackers import LengthTracker
from skpo.engines.engine import BatchedReward, Completion, Engine, SamplingParams, mix_seed, prompt_seeds, score_batch
from skpo.rollout.base import ROLLOUTS, RolloutContext, RolloutResult, Verdicts
from skpo.rows import Rows, concat_rows, pad_lists
from skpo.tasks.sources import PromptItem
from skpo.tasks.templates import skip_input_ids

__all__ = [
    "AnswerRewardFn",
    "DownstreamRows",
    "RolloutCounters",
    "SkpoPrompt",
    "SkpoRolloutBatch",
    "SkpoRolloutParams",
    "UpstreamRows",
    "cut_segment",
    "segment_nll",
    "select_segment",
    "skpo_rollout",
    "split_points",
]

AnswerRewardFn = Callable[[int, list[int]], float]
"""``reward_fn(prompt_index, answer_ids) -> float``: the outcome reward (±1 in the paper) of a
complete answer to prompt ``prompts[prompt_index]`` (answer tokens only, no prompt). A function
with a ``batch`` attribute is given all answers of a phase at once (see
:func:`skpo.engines.engine.score_batch`)."""

Selection = Literal["median", "extreme", "first"]

# Sub-seed tags of the three engine calls.
_SEGMENTS, _DOWNSTREAM, _OWN = 1, 2, 3


@dataclass(frozen=True)
class SkpoPrompt:
    """One prompt of a rollout batch.

    Attributes:
        key: hashable prompt id (the trackers' key, the upstream rows' group).
        prompt_ids: the plain (chat-)templated prompt ``q``, ending where the answer starts.
        head: leading tokens of ``q`` that stay first in the skip input (a BOS token; see
            :func:`skpo.tasks.templates.skip_input_ids`).
    """

    key: Hashable
    prompt_ids: Sequence[int]
    head: int = 0


@dataclass(frozen=True)
class SkpoRolloutParams:
    """SKPO's rollout switches (``rollout_params`` of the ``skpo`` kind); the defaults are the
    paper's, and Table 2's ablations are switches.

    Attributes:
        skip: ``True``: downstream input ``[s, q]``; ``False``: ablation ❶, continual ``q + s``.
        upstream_reward: ``"mc"``: mean of the ``G`` downstream rewards; ``"own"``: ablation ❷,
            the reward of one complete answer continued from ``q + s``.
        split: ``"uniform"``: ``t_q`` uniform over the tracker's range; ``"fixed"``: ablation
            ❸, the low end (``L/6``) on even steps and the high end (``L/2``) on odd steps.
        selection: ``"median"``; ``"extreme"``: ablation ❹, min-NLL on even steps and max-NLL
            on odd steps; ``"first"``: candidate 0 (no selection; the one-segment variant).
        num_segments: upstream candidates per prompt; ``None`` = the group size ``G`` (1 when
            ``selection="first"``: the one-segment variant, a deviation).
        split_low / split_high: ``t_q ~ U[L·split_low, L·split_high]`` (1/6 and 1/2; the
            length tracker's bounds).
        separator_ids: tokens between ``s`` and ``q`` in the skip input; non-empty is a
            deviation (U1). Only valid with ``skip=True``.
    """

    skip: bool = True
    upstream_reward: Literal["mc", "own"] = "mc"
    split: Literal["uniform", "fixed"] = "uniform"
    selection: Selection = "median"
    num_segments: int | None = None
    split_low: float = 1 / 6
    split_high: float = 1 / 2
    separator_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < self.split_low <= self.split_high <= 1:
            raise ValueError(f"need 0 < split_low <= split_high <= 1 (got {self.split_low}, {self.split_high})")
        if self.num_segments is not None and self.num_segments < 1:
            raise ValueError(f"num_segments must be >= 1, got {self.num_segments}")
        if self.upstream_reward not in ("mc", "own"):
            raise ValueError(f"upstream_reward must be 'mc' or 'own', got {self.upstream_reward!r}")
        if self.split not in ("uniform", "fixed"):
            raise ValueError(f"split must be 'uniform' or 'fixed', got {self.split!r}")
        if self.selection not in ("median", "extreme", "first"):
            raise ValueError(f"selection must be 'median', 'extreme' or 'first', got {self.selection!r}")
        if self.separator_ids and not self.skip:
            raise ValueError("separator_ids only applies to the skip input (skip=True)")
        object.__setattr__(self, "separator_ids", tuple(int(t) for t in self.separator_ids))

    def segments(self, group_size: int) -> int:
        """Upstream candidates per prompt."""
        if self.num_segments is not None:
            return self.num_segments
        return 1 if self.selection == "first" else group_size


# ---------------------------------------------------------------------- output records


@dataclass
class UpstreamRows:
    """One row per prompt: the selected segment ``s`` given ``q``. ``B`` prompts, ``K``
    candidates, ``T_up`` = longest selected segment (at least 1 column).

    Attributes:
        prompt_ids: ``[B]`` token lists ``q``.
        response_ids: ``[B, T_up]`` long, the segment, right-padded with ``pad_token_id``.
        response_mask: ``[B, T_up]`` long, 1 on segment tokens (an empty segment: all 0).
        old_log_probs: ``[B, T_up]`` float32 sampling log-probs of the segment (0 on pads).
        rewards: ``[B]`` float32 ``R_I`` (MC or own, per the config).
        mc_rewards: ``[B]`` float32 mean downstream reward (= ``rewards`` when ``"mc"``).
        own_rewards: ``[B]`` float32 reward of the own completion, ablation ❷ only.
        own_completions: ``[B]`` the own completions (tokens after ``s``), ablation ❷ only.
        prompt_keys: ``[B]`` prompt keys.
        split_points: ``[B]`` long ``t_q``.
        selected: ``[B]`` long ``k*``.
        cut_early: ``[B]`` bool, the selected candidate stopped and was cut to ``⌊ℓ/2⌋``.
        candidate_ids: ``[B][K]`` token lists of all candidates (after cutting).
        candidate_log_probs: ``[B][K]`` their sampling log-probs (after cutting).
        candidate_nll: ``[B, K]`` float64 mean NLL ``d_k`` (NaN for an empty candidate).
        candidate_sampled_lengths: ``[B, K]`` long ``ℓ``, tokens decoded before cutting.
        candidate_cut_early: ``[B, K]`` bool.
        length_observations: ``[B]`` float32 the length-tracker input (mean downstream
            answer length, U6); the ``skpo`` kind returns them as the result's
            ``length_observations``, which the run state folds into the tracker.
    """

    prompt_ids: list[list[int]]
    response_ids: Tensor
    response_mask: Tensor
    old_log_probs: Tensor
    rewards: Tensor
    mc_rewards: Tensor
    own_rewards: Tensor | None
    own_completions: list[list[int]] | None
    prompt_keys: list[Hashable]
    split_points: Tensor
    selected: Tensor
    cut_early: Tensor
    candidate_ids: list[list[list[int]]]
    candidate_log_probs: list[list[list[float]]]
    candidate_nll: Tensor
    candidate_sampled_lengths: Tensor
    candidate_cut_early: Tensor
    length_observations: Tensor


@dataclass
class DownstreamRows:
    """``G`` rows per prompt, prompt-major (row ``i·G + j`` is answer ``j`` of prompt ``i``).
    ``T_down`` = longest answer (at least 1 column).

    Attributes:
        prompt_ids: ``[B·G]`` conditioning token lists: ``s + separator + q`` (skip) or
            ``q + s`` (continual).
        response_ids: ``[B·G, T_down]`` long answers ``o`` (the tokens the engine decoded),
            right-padded.
        response_mask: ``[B·G, T_down]`` long.
        old_log_probs: ``[B·G, T_down]`` float32 sampling log-probs (0 on pads).
        rewards: ``[B·G]`` float32 ``R_II``. In the continual ablation the scored answer is
            ``s + o`` (``s`` is the start of the answer).
        prompt_keys: ``[B·G]`` prompt keys.
        segment_index: ``[B·G]`` key of the conditioning segment, ``(prompt key, step, i, k*)``
            (``i`` = upstream row, so a prompt drawn twice in one batch gives two groups).
            ``skpo_downstream_index(index, segment_index)`` groups the ``G`` answers of one
            ``[s, q]``.
        upstream_row: ``[B·G]`` long, the upstream row ``i`` of each answer.
        finish_reasons: ``[B·G]`` ``"stop"`` or ``"length"``.
    """

    prompt_ids: list[list[int]]
    response_ids: Tensor
    response_mask: Tensor
    old_log_probs: Tensor
    rewards: Tensor
    prompt_keys: list[Hashable]
    segment_index: list[tuple]
    upstream_row: Tensor
    finish_reasons: list[str]


@dataclass
class RolloutCounters:
    """Token counts of one rollout, for metrics and cost accounting (§1.9).

    Attributes:
        upstream_decoded_tokens: tokens decoded for all candidates, before cutting.
        downstream_decoded_tokens: tokens of all downstream answers.
        own_decoded_tokens: tokens of the own completions (ablation ❷; else 0).
        prefill_tokens: prompt tokens encoded, counting each distinct prompt of an engine
            call once (the shared-prefill ideal; an engine that splits a prompt's samples
            across chunks encodes it more often).
        num_cut_early: candidates that stopped and were cut to ``⌊ℓ/2⌋``.
        num_selected_cut_early: selected segments among them.
        num_empty_segments: selected segments with no tokens.
    """

    upstream_decoded_tokens: int = 0
    downstream_decoded_tokens: int = 0
    own_decoded_tokens: int = 0
    prefill_tokens: int = 0
    num_cut_early: int = 0
    num_selected_cut_early: int = 0
    num_empty_segments: int = 0

    @property
    def decoded_tokens(self) -> int:
        return self.upstream_decoded_tokens + self.downstream_decoded_tokens + self.own_decoded_tokens

    def as_metrics(self, prefix: str = "rollout/") -> dict[str, float]:
        names = [
            "upstream_decoded_tokens", "downstream_decoded_tokens", "own_decoded_tokens",
            "prefill_tokens", "num_cut_early", "num_selected_cut_early", "num_empty_segments",
        ]
        out = {prefix + n: float(getattr(self, n)) for n in names}
        out[prefix + "decoded_tokens"] = float(self.decoded_tokens)
        return out


@dataclass
class SkpoRolloutBatch:
    """Everything the SKPO losses need from one rollout step."""

    upstream: UpstreamRows
    downstream: DownstreamRows
    counters: RolloutCounters
    step: int


# ---------------------------------------------------------------------- the pieces


def split_points(
    tracker: LengthTracker,
    keys: Sequence[Hashable],
    split: Literal["uniform", "fixed"] = "uniform",
    step: int = 0,
    generator: torch.Generator | None = None,
) -> list[int]:
    """``[B]`` split points ``t_q`` (>= 1): uniform over ``tracker.split_range(key)``, or its
    low end (``⌈L/6⌉``) on even steps and high end (``⌊L/2⌋``) on odd steps (``"fixed"``)."""
    if split == "uniform":
        return tracker.sample_split(keys, generator)
    if split == "fixed":
        return [tracker.split_range(k)[step % 2] for k in keys]
    raise ValueError(f"split must be 'uniform' or 'fixed', got {split!r}")


def cut_segment(completion: Completion) -> tuple[list[int], list[float], bool]:
    """A candidate's segment: the whole sample if it was paused at ``t_q`` (finish
    ``"length"``), else (it stopped after ``ℓ`` tokens, stop token included) its first
    ``⌊ℓ/2⌋`` tokens. Returns ``(token_ids, logprobs, cut)``."""
    if completion.finish_reason == "stop":
        keep = len(completion.token_ids) // 2
        return list(completion.token_ids[:keep]), list(completion.logprobs[:keep]), True
    return list(completion.token_ids), list(completion.logprobs), False


def segment_nll(logprobs: Sequence[float]) -> float:
    """``d = mean_t(−logprob_t)``; NaN for an empty segment."""
    if not logprobs:
        return math.nan
    return -math.fsum(logprobs) / len(logprobs)


def select_segment(nll: Sequence[float], selection: Selection = "median", step: int = 0) -> int:
    """Index ``k*`` of the kept candidate.

    - ``"median"``: ``argmin_k |d_k − median(d)|`` with the *average* median of an even count.
      The minimisers are then exactly the candidates equal to one of the two middle values
      (both at distance half their gap), computed by rank so float rounding cannot pick one;
      the lowest index among them wins.
    - ``"extreme"``: min ``d`` on even steps, max ``d`` on odd steps (lowest index on ties).
    - ``"first"``: 0.

    NaN entries (empty candidates) are skipped; if all are NaN the result is 0.
    """
    if selection == "first":
        return 0
    valid = [k for k, d in enumerate(nll) if not math.isnan(d)]
    if not valid:
        return 0
    if selection == "median":
        values = sorted(nll[k] for k in valid)
        middles = (values[(len(values) - 1) // 2], values[len(values) // 2])
        return min(k for k in valid if nll[k] in middles)
    if selection == "extreme":
        target = min(nll[k] for k in valid) if step % 2 == 0 else max(nll[k] for k in valid)
        return min(k for k in valid if nll[k] == target)
    raise ValueError(f"selection must be 'median', 'extreme' or 'first', got {selection!r}")


def _base_seeds(seed: int | Sequence[int] | None, n: int, generator: torch.Generator | None) -> list[int]:
    """Per-prompt seeds of the rollout; ``None`` draws one from ``generator``."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return prompt_seeds(seed, n)


def _prefill_tokens(prompts: Sequence[Sequence[int]], n: int, budgets: Sequence[int]) -> int:
    """Prompt tokens an engine call encodes (each prompt once, skipped when nothing is decoded)."""
    if n == 0:
        return 0
    return sum(len(p) for p, b in zip(prompts, budgets) if b > 0)


# ---------------------------------------------------------------------- the rollout


def skpo_rollout(
    engine: Engine,
    prompts: Sequence[SkpoPrompt],
    tracker: LengthTracker,
    params: SamplingParams,
    reward_fn: AnswerRewardFn,
    generator: torch.Generator | None = None,
    rollout_params: SkpoRolloutParams = SkpoRolloutParams(),
    *,
    group_size: int = 8,
    step: int = 0,
    pad_token_id: int | None = None,
) -> SkpoRolloutBatch:
    """Run SKPO's two-phase rollout for a batch of prompts (module docstring: the procedure).

    Args:
        engine: any :class:`~skpo.engines.engine.Engine`; three calls at most (segments,
            downstream, own completions for ablation ❷).
        prompts: ``B`` prompts with keys; keys may repeat (each row is rolled out separately).
        tracker: the length tracker ``L_q``; read only (its update: ``length_observations``).
        params: sampling settings of all phases. ``params.max_new_tokens`` is the answer
            budget; ``params.seed`` seeds the call (vary it per step, or pass ``None`` and
            a generator that lives across steps).
        reward_fn: ``reward_fn(i, answer_ids)`` for prompt ``prompts[i]``.
        generator: source of the split points (and of the engine seed when ``params.seed``
            is ``None``).
        rollout_params: the paper's settings and ablation switches.
        group_size: ``G``, downstream answers per prompt (8).
        step: the training step (fixed-split and extreme-selection alternation; part of the
            segment key).
        pad_token_id: padding of the returned tensors; default ``engine.pad_token_id`` or 0.

    Returns:
        :class:`SkpoRolloutBatch` with ``B`` upstream rows and ``B·G`` downstream rows.
    """
    if not prompts:
        raise ValueError("skpo_rollout needs at least one prompt")
    if params.max_new_tokens < 1:
        raise ValueError("params.max_new_tokens (the answer budget) must be >= 1")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    pad = int(pad_token_id if pad_token_id is not None else getattr(engine, "pad_token_id", 0))
    config = rollout_params
    B, G, K = len(prompts), group_size, config.segments(group_size)
    budget = params.max_new_tokens
    qs = [list(p.prompt_ids) for p in prompts]
    heads = [int(p.head) for p in prompts]
    keys = [p.key for p in prompts]
    counters = RolloutCounters()

    # 1. Split points, then the seeds of the three engine calls.
    t_q = [min(t, budget) for t in split_points(tracker, keys, config.split, step, generator)]
    base = _base_seeds(params.seed, B, generator)

    def phase(tag: int) -> SamplingParams:
        return replace(params, seed=[mix_seed(s, tag) for s in base])

    # 2. Upstream candidates: K per prompt, each paused at its prompt's t_q.
    raw = engine.generate(qs, K, phase(_SEGMENTS), max_new_tokens=t_q)  # [B][K]
    counters.prefill_tokens += _prefill_tokens(qs, K, t_q)

    # 3. Cut early-stopped candidates, score them, keep one per prompt.
    cand_ids: list[list[list[int]]] = []
    cand_lps: list[list[list[float]]] = []
    cand_nll = torch.full((B, K), math.nan, dtype=torch.float64)
    cand_len = torch.zeros((B, K), dtype=torch.long)
    cand_cut = torch.zeros((B, K), dtype=torch.bool)
    selected: list[int] = []
    for i in range(B):
        ids_i, lps_i = [], []
        for k, c in enumerate(raw[i]):
            ids, lps, cut = cut_segment(c)
            ids_i.append(ids)
            lps_i.append(lps)
            cand_nll[i, k] = segment_nll(lps)
            cand_len[i, k] = len(c.token_ids)
            cand_cut[i, k] = cut
        cand_ids.append(ids_i)
        cand_lps.append(lps_i)
        selected.append(select_segment(cand_nll[i].tolist(), config.selection, step))
    segs = [cand_ids[i][selected[i]] for i in range(B)]
    seg_lps = [cand_lps[i][selected[i]] for i in range(B)]
    counters.upstream_decoded_tokens = int(cand_len.sum())
    counters.num_cut_early = int(cand_cut.sum())
    counters.num_selected_cut_early = sum(bool(cand_cut[i, selected[i]]) for i in range(B))
    counters.num_empty_segments = sum(len(s) == 0 for s in segs)

    # 4. Downstream: G answers per prompt from [s, q] (or q + s), one shared prefill each.
    if config.skip:
        down_in = [skip_input_ids(segs[i], qs[i], heads[i], config.separator_ids) for i in range(B)]
        down_budget = [budget] * B
        answer_prefix: list[list[int]] = [[] for _ in range(B)]
    else:
        # Continual: s is the start of the answer, so the whole answer s + o keeps the budget.
        down_in = [qs[i] + segs[i] for i in range(B)]
        down_budget = [budget - len(segs[i]) for i in range(B)]
        answer_prefix = segs
    down = engine.generate(down_in, G, phase(_DOWNSTREAM), max_new_tokens=down_budget)  # [B][G]
    counters.prefill_tokens += _prefill_tokens(down_in, G, down_budget)

    # 5. Rewards: R_II per answer, R_I = their mean per prompt.
    # One batch for all B·G answers (a verifier pool checks them in parallel).
    r_down = torch.tensor(
        score_batch(reward_fn, [(i, answer_prefix[i] + list(c.token_ids)) for i in range(B) for c in down[i]]),
        dtype=torch.float32,
    ).reshape(B, G)
    mc_rewards = r_down.mean(dim=1)  # [B]
    down_lens = torch.tensor([[len(c) for c in down[i]] for i in range(B)], dtype=torch.float32).reshape(B, G)
    counters.downstream_decoded_tokens = int(down_lens.sum())
    # U6: the tracker sees the length of complete answers (s included when s is a prefix).
    seg_lens = torch.tensor([len(s) for s in segs], dtype=torch.float32)
    length_obs = down_lens.mean(dim=1) + (0.0 if config.skip else seg_lens)

    own_rewards: Tensor | None = None
    own_completions: list[list[int]] | None = None
    if config.upstream_reward == "own":
        # Ablation ❷: s is scored by one complete answer that continues it from q + s.
        own_in = [qs[i] + segs[i] for i in range(B)]
        own_budget = [budget - len(segs[i]) for i in range(B)]
        own = engine.generate(own_in, 1, phase(_OWN), max_new_tokens=own_budget)  # [B][1]
        counters.prefill_tokens += _prefill_tokens(own_in, 1, own_budget)
        own_completions = [list(own[i][0].token_ids) for i in range(B)]
        counters.own_decoded_tokens = sum(len(c) for c in own_completions)
        own_rewards = torch.tensor(
            score_batch(reward_fn, [(i, segs[i] + own_completions[i]) for i in range(B)]), dtype=torch.float32
        )
    rewards_up = own_rewards if own_rewards is not None else mc_rewards

    # Upstream rows.
    up_ids, up_mask = pad_lists(segs, pad)
    upstream = UpstreamRows(
        prompt_ids=qs,
        response_ids=up_ids,
        response_mask=up_mask,
        old_log_probs=pad_lists(seg_lps, 0.0, torch.float32, width=up_ids.shape[1])[0],
        rewards=rewards_up.clone(),
        mc_rewards=mc_rewards,
        own_rewards=own_rewards,
        own_completions=own_completions,
        prompt_keys=list(keys),
        split_points=torch.tensor(t_q, dtype=torch.long),
        selected=torch.tensor(selected, dtype=torch.long),
        cut_early=torch.tensor([bool(cand_cut[i, selected[i]]) for i in range(B)], dtype=torch.bool),
        candidate_ids=cand_ids,
        candidate_log_probs=cand_lps,
        candidate_nll=cand_nll,
        candidate_sampled_lengths=cand_len,
        candidate_cut_early=cand_cut,
        length_observations=length_obs,
    )

    # Downstream rows, prompt-major: row i*G + j.
    flat = [c for i in range(B) for c in down[i]]
    d_ids, d_mask = pad_lists([c.token_ids for c in flat], pad)
    downstream = DownstreamRows(
        prompt_ids=[list(down_in[i]) for i in range(B) for _ in range(G)],
        response_ids=d_ids,
        response_mask=d_mask,
        old_log_probs=pad_lists([c.logprobs for c in flat], 0.0, torch.float32, width=d_ids.shape[1])[0],
        rewards=r_down.reshape(B * G),
        prompt_keys=[keys[i] for i in range(B) for _ in range(G)],
        segment_index=[(keys[i], step, i, selected[i]) for i in range(B) for _ in range(G)],
        upstream_row=torch.arange(B).repeat_interleave(G),
        finish_reasons=[c.finish_reason for c in flat],
    )
    return SkpoRolloutBatch(upstream=upstream, downstream=downstream, counters=counters, step=step)


# ----------------------------------------------------------------------------- the ``skpo`` rollout kind


def skpo_prompt_growth(params: SkpoRolloutParams, max_new_tokens: int, initial_length: float) -> int:
    """The longest segment ``s`` in front of ``q``: the split point ``t_q <= ⌊split_high · L⌋``,
    capped at the answer budget, where ``L`` (the tracked mean length) starts at
    ``initial_length`` and moves towards observed lengths — at most the answer budget, or twice
    it in the continual ablation (``|s| + mean |o|``)."""
    longest = max(initial_length, max_new_tokens if params.skip else 2 * max_new_tokens)
    return min(max_new_tokens, math.floor(params.split_high * longest))


def skpo_length_bounds(params: SkpoRolloutParams) -> dict[str, float]:
    """The length tracker's split bounds: ``t_q ~ U[L·split_low, L·split_high]``."""
    return {"low": params.split_low, "high": params.split_high}


@ROLLOUTS.register("skpo", SkpoRolloutParams, roles=("upstream", "downstream"),
                   length_tracker=skpo_length_bounds, prompt_growth=skpo_prompt_growth,
                   growth_note="the skip segment s (method.rollout_params.split_high × L, L from rollout.initial_length)")
def skpo_rollout_kind(ctx: RolloutContext, items: list[PromptItem]) -> RolloutResult:
    """SKPO's two phases: G segments from ``q`` (median-NLL one kept), G answers from ``[s, q]``;
    the upstream row's reward is the mean of its G answers' rewards."""
    correct_log: list[bool] = []
    verdicts: Verdicts = {}

    def score_answers(calls: list[tuple[int, list[int]]]) -> list[float]:
        with ctx.timer("scoring"):
            scores = ctx.score([items[i] for i, _ in calls], [list(a) for _, a in calls])
        correct_log.extend(scores.correct)
        verdicts.update(scores.verdicts)
        return scores.rewards

    assert ctx.length_tracker is not None  # (methods.checks: the skpo kind declares length_tracker)
    batch = skpo_rollout(
        ctx.engine, [SkpoPrompt(it.key, it.prompt_ids, it.head) for it in items], ctx.length_tracker, ctx.params,
        BatchedReward(score_answers), ctx.generator, ctx.rollout_params, group_size=ctx.group_size, step=ctx.step,
        pad_token_id=ctx.pad_id,
    )
    up, down = batch.upstream, batch.downstream
    upstream = Rows(up.prompt_ids, up.response_ids, up.response_mask.float(), up.old_log_probs.float(),
                    up.rewards.float(), list(up.prompt_keys))
    downstream = Rows(down.prompt_ids, down.response_ids, down.response_mask.float(), down.old_log_probs.float(),
                      down.rewards.float(), list(down.prompt_keys), skpo_downstream_index(down.prompt_keys, down.segment_index))
    c = batch.counters
    n_down = len(down.rewards)  # the downstream answers are scored first, then any own completions
    metrics = {
        "upstream/reward": up.rewards.float().mean().item(),
        "upstream/segment_length": up.response_mask.float().sum(-1).mean().item(),
        "upstream/cut_early": c.num_cut_early / max(1, len(items) * ctx.rollout_params.segments(ctx.group_size)),
        "upstream/split_point": up.split_points.float().mean().item(),
        "downstream/reward": down.rewards.float().mean().item(),
        "downstream/accuracy": sum(correct_log[:n_down]) / max(1, n_down),
        "response_length/mean": down.response_mask.float().sum(-1).mean().item(),
        "tokens/prefill": c.prefill_tokens,
    }
    metrics["accuracy/mean"] = metrics["downstream/accuracy"]
    metrics["reward/mean"] = metrics["downstream/reward"]
    rows = concat_rows([upstream, downstream], ctx.pad_id, roles=["upstream", "downstream"])
    return RolloutResult(rows, metrics, c.decoded_tokens, c.prefill_tokens,
                         (list(up.prompt_keys), up.length_observations.tolist()), verdicts)
