"""Advantage estimators: pure functions from rewards (and baselines/values) to token advantages.

Every estimator is registered by name in ``ADVANTAGE_ESTIMATORS`` with the signature

    fn(batch: AdvantageInputs, params) -> Tensor[B, T]   (zero on masked tokens)

and metadata the trainer reads instead of the estimator's name:

==================  =================================================================================
``group_key``       set (any name; ``"prompt"`` by convention) for group-relative estimators:
                    ``AdvantageInputs.index`` then holds each row's group id, which the rollout
                    kind gives (the prompt, or SKPO's ``[s, q]``). DAPO's filter and
                    ``zero_adv_group_share`` apply to them. Absent for the others.
``baseline``        ``"value_tracker"``: reads the per-prompt tracker's pre-update value
                    (``AdvantageInputs.baseline``), and its rows' rewards update the tracker.
``needs``           inputs beyond rewards: ``"step_values"`` (with ``step_mask`` and
                    ``token_step_index``), ``"token_weights"``, ``"token_rewards"`` (a method's
                    trained reward model: PRIME); and two the trainer attaches for any rollout
                    (``TRAINER_INPUTS``): ``"response_ids"`` (the response tokens) and
                    ``"answers"`` (each response's extracted final answer, by the source's
                    verifier). :func:`estimator_inputs` reads this and ``baseline``.
``token_stats``     names of full-vocabulary reductions of the rollout policy it reads
                    (:mod:`skpo.algorithms.token_stats`), ``AdvantageInputs.token_stats``.
``state``           a class built as ``cls(params)`` holding state kept across steps (RiskPO's
                    quantile tracker, PAPO's entropy controller), with ``state_dict()`` /
                    ``load_state_dict()`` (saved in every checkpoint) and optionally
                    ``metrics()``; the estimator reads and updates ``AdvantageInputs.state``.
``outputs``         names of per-token tensors ``[B, T]`` the estimator leaves in
                    ``AdvantageInputs.outputs`` for its loss (``PolicyLossInputs.extras``).
==================  =================================================================================

Shapes: ``B`` responses (rows), ``T`` response positions, ``S`` reasoning steps per row.
Outcome rewards sit anywhere in ``token_level_rewards`` and are summed per row (verl's
convention: the scorer writes the scalar at the last valid token).

Numerics follow verl 0.9.1 (``core_algos``): Bessel std, ``epsilon = 1e-6`` added to the std,
a singleton group has mean 0 and std 1 (so its advantage is the raw reward). TRL uses
``epsilon = 1e-4`` and gives singletons advantage 0; switch ``epsilon`` to match it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from skpo.registry import Registry

from .groups import group_ids, group_stats

Index = Sequence[Hashable] | torch.Tensor


@dataclass
class AdvantageInputs:
    """Everything an estimator may read. Optional fields are filled by the rollouts that have them.

    Attributes:
        token_level_rewards: ``[B, T]`` rewards; outcome estimators use the row sum.
        response_mask: ``[B, T]`` 1 for tokens that get an advantage.
        index: ``[B]`` group key per row (the rollout kind's group: the prompt uid, or
            SKPO's ``(prompt, segment)``); any hashable.
        segment_index: ``[B]`` SKPO upstream-segment key per downstream row, for callers that
            pass prompt keys in ``index`` (:func:`skpo_downstream_index` pairs them).
        baseline: ``[B]`` tracker value *before* this step's update (SPO / SKPO upstream).
        step_values: ``[B, S]`` Monte Carlo value ``V(s_k)`` of the state before step ``k``.
        step_mask: ``[B, S]`` 1 for the steps a row has.
        token_step_index: ``[B, T]`` the step each token belongs to (long).
        token_weights: ``[B, T]`` per-token weights (OAR), 1 where unweighted.
        token_rewards: ``[B, T]`` per-token rewards of the method's trained reward model
            (``skpo.models.reward_models``; PRIME's implicit PRM), 0 on masked tokens.
        response_ids: ``[B, T]`` the response tokens (long), for ``needs=("response_ids",)``.
        answers: ``[B]`` each response's extracted final answer (``None``: none found).
        token_stats: name → ``[B, T]`` reductions of the rollout policy (``token_stats`` meta).
        state: the term's state object (``state`` meta), read and updated by the estimator.
        outputs: name → ``[B, T]`` tensors the estimator leaves for its loss (``outputs`` meta).
    """

    token_level_rewards: torch.Tensor
    response_mask: torch.Tensor
    index: Index | None = None
    segment_index: Index | None = None
    baseline: torch.Tensor | None = None
    step_values: torch.Tensor | None = None
    step_mask: torch.Tensor | None = None
    token_step_index: torch.Tensor | None = None
    token_weights: torch.Tensor | None = None
    token_rewards: torch.Tensor | None = None
    response_ids: torch.Tensor | None = None
    answers: Sequence[str | None] | None = None
    token_stats: dict[str, torch.Tensor] | None = None
    state: Any = None
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def scores(self) -> torch.Tensor:
        """Outcome score per row, ``[B]``."""
        return self.token_level_rewards.sum(dim=-1)

    def require(self, *names: str) -> None:
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise ValueError(f"advantage estimator needs {missing} in AdvantageInputs")


TRAINER_INPUTS = ("response_ids", "answers")  # ``needs`` the trainer fills for any rollout kind


def estimator_inputs(meta: Mapping[str, Any]) -> tuple[str, ...]:
    """What an estimator reads beyond rewards, from its metadata: its ``needs``, and
    ``"baseline"`` when it reads the value tracker (``baseline="value_tracker"``)."""
    return tuple(meta.get("needs", ())) + (("baseline",) if meta.get("baseline") == "value_tracker" else ())


def is_group_relative(meta: Mapping[str, Any]) -> bool:
    """Whether an estimator normalises within groups (``group_key`` metadata)."""
    return meta.get("group_key") is not None

AdvantageFn = Callable[[AdvantageInputs, Any], torch.Tensor]
ADVANTAGE_ESTIMATORS: Registry[AdvantageFn] = Registry("advantage estimator")


def broadcast(per_row: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` → ``[B, T]`` on the unmasked tokens."""
    return per_row.unsqueeze(-1) * response_mask.to(per_row.dtype)


# --------------------------------------------------------------------------- group-relative


def group_normalized_scores(
    scores: torch.Tensor, index: Index, epsilon: float = 1e-6, norm_by_std: bool = True
) -> torch.Tensor:
    """GRPO advantage per row: ``(r − mean_g) / (std_g + ε)`` (or ``r − mean_g`` without std).

    Args:
        scores: ``[B]`` outcome rewards.
        index: ``[B]`` group keys.
    Returns:
        ``[B]``. All-equal groups give exactly 0; singleton groups give ``r / (1 + ε)``
        (verl: mean 0, std 1).
    """
    ids, k = group_ids(index)
    count, mean, std = group_stats(scores, ids, k)
    singleton = count == 1
    mean = torch.where(singleton, torch.zeros_like(mean), mean)
    std = torch.where(singleton, torch.ones_like(std), std)
    centred = scores - mean[ids]
    return centred / (std[ids] + epsilon) if norm_by_std else centred


@dataclass(frozen=True)
class GRPOParams:
    epsilon: float = 1e-6
    norm_by_std: bool = True  # False = Dr. GRPO (no std division)


@dataclass(frozen=True)
class GRPOClipParams(GRPOParams):
    clip: float | None = None  # |A| <= clip after normalisation (Knapsack RL's adv_clip_value 5.0); None: off

    def __post_init__(self) -> None:
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be > 0 or null (got {self.clip})")


@ADVANTAGE_ESTIMATORS.register("grpo", GRPOClipParams, group_key="prompt")
def grpo_advantage(batch: AdvantageInputs, params: GRPOParams) -> torch.Tensor:
    """GRPO (and Dr. GRPO with ``norm_by_std=False``): group z-score broadcast to tokens,
    clamped to ``[−clip, clip]`` when ``clip`` is set (groups of unequal size — Knapsack RL's
    up to 128 answers — give a lone success ``A ≈ √N``)."""
    batch.require("index")
    assert batch.index is not None  # require() raised otherwise
    adv = group_normalized_scores(batch.scores, batch.index, params.epsilon, params.norm_by_std)
    clip = getattr(params, "clip", None)
    if clip is not None:
        adv = adv.clamp(-clip, clip)
    return broadcast(adv, batch.response_mask)


@dataclass(frozen=True)
class RLOOParams:
    pass


@ADVANTAGE_ESTIMATORS.register("rloo", RLOOParams, group_key="prompt")
def rloo_advantage(batch: AdvantageInputs, params: RLOOParams) -> torch.Tensor:
    """RLOO: ``r_i − mean_{j≠i} r_j = G/(G−1)·(r_i − mean r)``; a singleton keeps ``r``."""
    batch.require("index")
    scores = batch.scores
    ids, k = group_ids(batch.index)
    count, mean, _ = group_stats(scores, ids, k)
    n = count[ids]
    loo = torch.where(n > 1, (scores - mean[ids]) * n / (n - 1).clamp(min=1), scores)
    return broadcast(loo, batch.response_mask)


@dataclass(frozen=True)
class BNPOParams:
    reward_min: float | None = None  # bounds for the [0, 1] map; None = batch min/max
    reward_max: float | None = None
    max_inverse_density: float = 1e6


def beta_density(p: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Beta(α, β) density at ``p`` (0 outside the support's interior when α, β > 1)."""
    log_norm = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)
    p = p.clamp(0.0, 1.0)
    with torch.no_grad():
        log_pdf = (alpha - 1) * torch.log(p) + (beta - 1) * torch.log1p(-p) - log_norm
    return torch.exp(torch.nan_to_num(log_pdf, nan=-math.inf))


@ADVANTAGE_ESTIMATORS.register("bnpo", BNPOParams, group_key="prompt")
def bnpo_advantage(batch: AdvantageInputs, params: BNPOParams) -> torch.Tensor:
    """BNPO: ``(R̃ − p̂(q)) / f_Beta(p̂(q); α, β)`` with α, β refitted on the batch.

    ``R̃`` maps rewards to [0, 1]; ``p̂(q)`` is the group mean; α, β come from a
    method-of-moments fit of the per-group ``p̂`` (``α = max(1, 1 + a/3)``, likewise β).
    Reading: the moment fit uses the population variance over groups; a batch with zero
    variance falls back to α = β = 1 (density 1: REINFORCE with a group-mean baseline).
    """
    batch.require("index")
    scores = batch.scores.to(torch.float64)
    lo = scores.min().item() if params.reward_min is None else params.reward_min
    hi = scores.max().item() if params.reward_max is None else params.reward_max
    unit = (scores - lo) / (hi - lo) if hi > lo else torch.zeros_like(scores)
    ids, k = group_ids(batch.index)
    _, p_hat, _ = group_stats(unit, ids, k)  # [K]
    mu = p_hat.mean().item()
    var = p_hat.var(unbiased=False).item()
    alpha = beta = 1.0
    if var > 1e-12 and 0.0 < mu < 1.0:
        common = mu * (1 - mu) / var - 1
        alpha = max(1.0, 1.0 + common * mu / 3)
        beta = max(1.0, 1.0 + common * (1 - mu) / 3)
    inv_density = (1.0 / beta_density(p_hat, alpha, beta)).clamp(0.0, params.max_inverse_density)
    adv = (unit - p_hat[ids]) * inv_density[ids]
    return broadcast(adv.to(batch.token_level_rewards.dtype), batch.response_mask)


# --------------------------------------------------------------------------- SKPO


def skpo_downstream_index(prompt_index: Index, segment_index: Index) -> list[tuple[Hashable, Hashable]]:
    """Group key of a downstream answer: (prompt, upstream segment) — the G answers of one
    ``[s, q]`` form one group."""
    prompts = prompt_index.tolist() if isinstance(prompt_index, torch.Tensor) else list(prompt_index)
    segments = segment_index.tolist() if isinstance(segment_index, torch.Tensor) else list(segment_index)
    if len(prompts) != len(segments):
        raise ValueError(f"prompt_index has {len(prompts)} rows but segment_index has {len(segments)}")
    return list(zip(prompts, segments))


@ADVANTAGE_ESTIMATORS.register("skpo_downstream", GRPOParams, group_key="segment")
def skpo_downstream_advantage(batch: AdvantageInputs, params: GRPOParams) -> torch.Tensor:
    """SKPO Eq. 5: group z-score over the G answers that share one ``[s, q]``. The SKPO rollout
    gives those answers one group id (``index``); with prompt keys in ``index``, pass the
    segments in ``segment_index``."""
    batch.require("index")
    assert batch.index is not None  # require() raised otherwise
    keys = batch.index if batch.segment_index is None else skpo_downstream_index(batch.index, batch.segment_index)
    adv = group_normalized_scores(batch.scores, keys, params.epsilon, params.norm_by_std)
    return broadcast(adv, batch.response_mask)


@dataclass(frozen=True)
class SingleStreamParams:
    normalize: bool = True  # batch (A − μ_B)/(σ_B + ε)
    epsilon: float = 1e-6


def batch_normalized(values: torch.Tensor, epsilon: float = 1e-6) -> torch.Tensor:
    """``(x − mean) / (std + ε)`` over ``[B]`` with Bessel std; a batch of one gives 0."""
    if values.numel() < 2:
        return torch.zeros_like(values)
    return (values - values.mean()) / (values.std() + epsilon)


@ADVANTAGE_ESTIMATORS.register("spo", SingleStreamParams, baseline="value_tracker")
def single_stream_advantage(batch: AdvantageInputs, params: SingleStreamParams) -> torch.Tensor:
    """SPO / SKPO upstream (Eq. 6): ``A = R − V̂₋₁(q)`` with the tracker's *pre-update*
    baseline, normalised over the batch.

    For SKPO the row reward is the upstream segment's Monte Carlo reward (mean of its G
    downstream rewards); for SPO it is the response's outcome reward.
    """
    batch.require("baseline")
    assert batch.baseline is not None  # require() raised otherwise
    raw = batch.scores - batch.baseline.to(batch.scores.dtype)
    adv = batch_normalized(raw, params.epsilon) if params.normalize else raw
    return broadcast(adv, batch.response_mask)


ADVANTAGE_ESTIMATORS.register("skpo_upstream", SingleStreamParams, baseline="value_tracker")(single_stream_advantage)


# --------------------------------------------------------------------------- Monte Carlo steps


def mc_step_advantages(
    step_values: torch.Tensor, step_mask: torch.Tensor, outcome: torch.Tensor
) -> torch.Tensor:
    """VinePPO step advantages ``A_k = r_k + V(s_{k+1}) − V(s_k)`` (γ = 1).

    Args:
        step_values: ``[B, S]`` value of the state *before* step ``k`` (``V(s_0)`` = prompt value).
        step_mask: ``[B, S]`` 1 for the row's steps (a prefix of the row).
        outcome: ``[B]`` final reward, paid on the last step (``r_k = 0`` before it).
    Returns:
        ``[B, S]``; the terminal value ``V(s_S) = 0`` so the last step gets ``R − V(s_last)``.
    """
    mask = step_mask.to(step_values.dtype)
    values = step_values * mask
    next_values = torch.zeros_like(values)
    next_values[:, :-1] = values[:, 1:] * mask[:, 1:]
    n_steps = step_mask.sum(dim=-1).long()  # [B]
    rewards = torch.zeros_like(values)
    rows = torch.nonzero(n_steps > 0).squeeze(-1)
    rewards[rows, n_steps[rows] - 1] = outcome[rows].to(values.dtype)
    return (rewards + next_values - values) * mask


@dataclass(frozen=True)
class MCStepParams:
    pass


@ADVANTAGE_ESTIMATORS.register("mc_step", MCStepParams, needs=("step_values",))
def mc_step_advantage(batch: AdvantageInputs, params: MCStepParams) -> torch.Tensor:
    """Monte Carlo dense baseline (VinePPO): step advantage broadcast to the step's tokens."""
    batch.require("step_values", "step_mask", "token_step_index")
    assert batch.step_values is not None and batch.step_mask is not None and batch.token_step_index is not None
    step_adv = mc_step_advantages(batch.step_values, batch.step_mask, batch.scores)  # [B, S]
    idx = batch.token_step_index.clamp(0, step_adv.shape[1] - 1)
    return torch.gather(step_adv, 1, idx) * batch.response_mask.to(step_adv.dtype)


# --------------------------------------------------------------------------- OAR


@dataclass(frozen=True)
class OARWeightParams:
    threshold: float = 0.25  # quantile q of the normalised scores
    floor: float = 0.1  # minimum weight of the suppressed tier
    boost: float = 1.0  # β: boosted weights lie in [1, 1 + β]
    mass_preserving: bool = True  # rescale so Σ_t w_t = number of scored tokens
    answer_mode: str = "answer_mean"  # the probe's readout of P_final (skpo.models.answer_probe): answer_mean | last

    def __post_init__(self) -> None:
        if self.answer_mode not in ("answer_mean", "last"):
            raise ValueError(f"answer_mode must be 'answer_mean' or 'last' (got {self.answer_mode!r})")


def oar_bilevel_weights(
    importance: torch.Tensor,
    mask: torch.Tensor,
    threshold: float = 0.25,
    floor: float = 0.1,
    boost: float = 1.0,
    mass_preserving: bool = True,
) -> torch.Tensor:
    """OAR's Bi-Level reshaping weights from raw token importance.

    Per row, over its scored tokens: ``ℓ = log(1 + I)``; min-max normalise to ``n``
    (range 1 when constant); ``τ = quantile_q(n)`` (linear interpolation); below ``τ``:
    ``w = max(n / (τ + 1e-8), floor)``; at or above: ``w = 1 + β (n − τ)/(1 − τ + 1e-8)``;
    optionally rescale so ``Σ w`` equals the number of scored tokens.

    Args:
        importance: ``[B, T]`` non-negative scores (OAR-P KL or OAR-G saliency).
        mask: ``[B, T]`` 1 for scored (reasoning) tokens.
    Returns:
        ``[B, T]`` weights; 1.0 on unscored tokens (they keep the plain advantage).
    """
    weights = torch.ones_like(importance, dtype=torch.float32)
    for row in range(importance.shape[0]):
        sel = mask[row].bool()
        if not sel.any():
            continue
        log_i = torch.log1p(importance[row, sel].float().clamp(min=0))
        lo, hi = log_i.min(), log_i.max()
        span = hi - lo if hi > lo else torch.ones((), dtype=log_i.dtype)
        norm = (log_i - lo) / span
        tau = torch.quantile(norm, threshold)
        low = torch.clamp(norm / (tau + 1e-8), min=floor)
        high = 1 + boost * (norm - tau) / (1 - tau + 1e-8)
        w = torch.where(norm < tau, low, high)
        if mass_preserving:
            w = w * sel.sum() / (w.sum() + 1e-8)
        weights[row, sel] = w
    return weights.to(importance.dtype)


@ADVANTAGE_ESTIMATORS.register("oar", GRPOParams, group_key="prompt", needs=("token_weights",))
def oar_advantage(batch: AdvantageInputs, params: GRPOParams) -> torch.Tensor:
    """OAR: the GRPO advantage times per-token reshaping weights (``token_weights``)."""
    batch.require("index", "token_weights")
    assert batch.token_weights is not None  # require() raised otherwise
    return grpo_advantage(batch, params) * batch.token_weights.to(batch.token_level_rewards.dtype)


# --------------------------------------------------------------------------- DAPO filter


def dapo_group_filter(scores: torch.Tensor, index: Index) -> torch.Tensor:
    """DAPO dynamic sampling: keep the rows of groups whose rewards are not all equal.

    Args:
        scores: ``[B]`` outcome rewards; index: ``[B]`` group keys.
    Returns:
        ``[B]`` bool keep-mask (singleton groups are dropped: they carry no contrast).
    """
    ids, k = group_ids(index)
    big = torch.finfo(torch.float64).max
    s = scores.to(torch.float64)
    gmax = torch.full((k,), -big, dtype=torch.float64).scatter_reduce_(0, ids, s, "amax")
    gmin = torch.full((k,), big, dtype=torch.float64).scatter_reduce_(0, ids, s, "amin")
    return (gmax > gmin)[ids]


__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AdvantageInputs",
    "BNPOParams",
    "GRPOParams",
    "MCStepParams",
    "OARWeightParams",
    "RLOOParams",
    "SingleStreamParams",
    "TRAINER_INPUTS",
    "batch_normalized",
    "beta_density",
    "broadcast",
    "dapo_group_filter",
    "group_normalized_scores",
    "mc_step_advantages",
    "oar_bilevel_weights",
    "skpo_downstream_index",
]
