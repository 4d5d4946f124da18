"""Policy losses: pure functions from log-probs and advantages to a per-token loss matrix.

Every loss is registered by name in ``POLICY_LOSSES`` with the signature

    fn(inputs: PolicyLossInputs, params) -> PolicyLossOutputs

The loss matrix is ``[B, T]`` (to be minimised); aggregation into a scalar is a separate,
explicit step (``masked.agg_loss``) chosen by the method preset, so the same loss can be
token-mean (DAPO) or seq-mean-token-mean (GRPO). Metrics are detached scalars.

Numerics follow verl 0.9.1: the log-ratio is clamped to ±20 before ``exp``; PPO's dual clip
(Ye et al. 2020) is on by default with ``c = 3`` for negative advantages (TRL has none: set
``dual_clip=None``); CISPO clamps the ratio two-sided to ``[1 − ε_low, 1 + ε_high]`` (TRL
clamps only from above at an absolute value: ``clamp="upper"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from skpo.registry import Registry

from .masked import masked_mean

LOG_RATIO_CLAMP = 20.0


@dataclass
class PolicyLossInputs:
    """Shapes: all ``[B, T]``.

    Attributes:
        log_prob: current policy log π_θ(o_t) (carries the gradient).
        old_log_prob: behaviour/old policy log-probs (no gradient).
        advantages: token advantages.
        response_mask: 1 for tokens in the loss.
        rollout_is_weights: optional truncated IS weights (rollout engine vs trainer), detached.
        extras: name → ``[B, T]`` per-token inputs beyond the above, detached: the rollout
            policy's token statistics the loss declares (``token_stats`` metadata,
            :mod:`skpo.algorithms.token_stats`) and tensors its term's estimator left
            (``outputs`` metadata of the estimator).
    """

    log_prob: torch.Tensor
    old_log_prob: torch.Tensor
    advantages: torch.Tensor
    response_mask: torch.Tensor
    rollout_is_weights: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class PolicyLossOutputs:
    loss_mat: torch.Tensor  # [B, T], to be aggregated with the preset's mode
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


PolicyLossFn = Callable[[PolicyLossInputs, Any], PolicyLossOutputs]
POLICY_LOSSES: Registry[PolicyLossFn] = Registry("policy loss")


def _masked_inputs(fn: PolicyLossFn) -> PolicyLossFn:
    """Zero every input on masked tokens before the loss sees them.

    Padding may hold anything (``-inf`` log-probs, NaN advantages); without this a
    ``0 · NaN`` in the backward pass would leak NaN gradients into real tokens' parameters.
    """

    def wrapped(inputs: PolicyLossInputs, params: Any) -> PolicyLossOutputs:
        keep = inputs.response_mask.bool()
        zero = torch.zeros((), dtype=inputs.log_prob.dtype, device=inputs.log_prob.device)
        clean = PolicyLossInputs(
            log_prob=torch.where(keep, inputs.log_prob, zero),
            old_log_prob=torch.where(keep, inputs.old_log_prob, zero),
            advantages=torch.where(keep, inputs.advantages, zero),
            response_mask=inputs.response_mask,
            rollout_is_weights=None
            if inputs.rollout_is_weights is None
            else torch.where(keep, inputs.rollout_is_weights, zero),
            extras={k: torch.where(keep, v.to(zero.dtype), zero) for k, v in inputs.extras.items()},
        )
        return fn(clean, params)

    wrapped.__name__, wrapped.__qualname__, wrapped.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    return wrapped


def register_loss(name: str, params_cls: type, **meta: Any) -> Callable[[PolicyLossFn], PolicyLossFn]:
    """Register a policy loss; its inputs are sanitised on masked tokens (``_masked_inputs``).
    Metadata: ``token_stats=(names…)``, the rollout policy's token statistics it reads from
    ``PolicyLossInputs.extras`` (:mod:`skpo.algorithms.token_stats`)."""

    def decorator(fn: PolicyLossFn) -> PolicyLossFn:
        POLICY_LOSSES.register(name, params_cls, **meta)(_masked_inputs(fn))
        return fn

    return decorator


def _log_ratio(inputs: PolicyLossInputs, clamp: float | None = LOG_RATIO_CLAMP) -> torch.Tensor:
    log_ratio = inputs.log_prob - inputs.old_log_prob.detach()
    return log_ratio.clamp(-clamp, clamp) if clamp is not None else log_ratio


def _with_is(loss_mat: torch.Tensor, inputs: PolicyLossInputs) -> torch.Tensor:
    if inputs.rollout_is_weights is None:
        return loss_mat
    return loss_mat * inputs.rollout_is_weights.detach()


def _approx_kl(log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of −log r = log π_old − log π_θ over the tokens (verl's ``ppo_kl`` metric)."""
    return masked_mean(-log_ratio, mask).detach()


# --------------------------------------------------------------------------- PPO clip


@dataclass(frozen=True)
class PPOClipParams:
    clip_low: float = 0.2  # ratio floor 1 − clip_low
    clip_high: float = 0.2  # ratio ceiling 1 + clip_high (0.28 = DAPO clip-higher)
    dual_clip: float | None = 3.0  # c > 1 bounds the loss of A < 0 tokens; None = off

    def __post_init__(self) -> None:
        if self.dual_clip is not None and self.dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1 (got {self.dual_clip})")


@register_loss("ppo_clip", PPOClipParams)
def ppo_clip_loss(inputs: PolicyLossInputs, params: PPOClipParams) -> PolicyLossOutputs:
    """``−min(r·A, clip(r, 1−ε_l, 1+ε_h)·A)``, and for ``A < 0`` at most ``−c·A`` (dual clip)."""
    adv, mask = inputs.advantages, inputs.response_mask
    log_ratio = _log_ratio(inputs)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - params.clip_low, 1 + params.clip_high)
    loss = torch.maximum(unclipped, clipped)
    metrics = {"clipfrac": masked_mean((clipped > unclipped).float(), mask)}
    if params.dual_clip is not None:
        dual = -adv * params.dual_clip
        metrics["clipfrac_dual"] = masked_mean(((loss > dual) & (adv < 0)).float(), mask)
        loss = torch.where(adv < 0, torch.minimum(loss, dual), loss)
    metrics["approx_kl"] = _approx_kl(log_ratio, mask)
    return PolicyLossOutputs(_with_is(loss, inputs), {k: v.detach() for k, v in metrics.items()})


# --------------------------------------------------------------------------- CISPO


@dataclass(frozen=True)
class CISPOParams:
    clip_low: float = 0.2
    clip_high: float = 0.28  # SKPO downstream: r̂ = clip(r, 0.8, 1.28) (reading U2)
    clamp: str = "two_sided"  # "two_sided" (verl) or "upper" (TRL: r ≤ clip_high, absolute)

    def __post_init__(self) -> None:
        if self.clamp not in ("two_sided", "upper"):
            raise ValueError(f"CISPO clamp must be 'two_sided' or 'upper' (got {self.clamp!r})")


@register_loss("cispo", CISPOParams)
def cispo_loss(inputs: PolicyLossInputs, params: CISPOParams) -> PolicyLossOutputs:
    """``−sg(clip(r))·A·log π``: the clipped IS weight is a constant, so the gradient is
    ``clip(r)·A·∇log π`` on every token (no token is dropped, unlike PPO's clip)."""
    mask = inputs.response_mask
    log_ratio = _log_ratio(inputs)
    ratio = torch.exp(log_ratio)
    if params.clamp == "two_sided":
        weight = ratio.clamp(1 - params.clip_low, 1 + params.clip_high)
    else:
        weight = ratio.clamp(max=params.clip_high)
    loss = -weight.detach() * inputs.advantages * inputs.log_prob
    metrics = {
        "clipfrac": masked_mean((ratio != weight).float(), mask).detach(),
        "approx_kl": _approx_kl(log_ratio, mask),
    }
    return PolicyLossOutputs(_with_is(loss, inputs), metrics)


# --------------------------------------------------------------------------- GSPO


@dataclass(frozen=True)
class GSPOParams:
    clip_low: float = 3e-4
    clip_high: float = 4e-4


@register_loss("gspo", GSPOParams)
def gspo_loss(inputs: PolicyLossInputs, params: GSPOParams) -> PolicyLossOutputs:
    """Sequence-level ratio ``s_i = exp(mean_t log r_{i,t})`` in its token form
    ``s_{i,t} = sg[s_i]·π_θ(o_t)/sg[π_θ(o_t)]`` (same value, per-token gradient), PPO-clipped.
    The log of the ratio is clamped at 10 like verl. Use ``seq-mean-token-mean`` aggregation
    for the paper's sequence-level objective."""
    adv, mask = inputs.advantages, inputs.response_mask
    log_ratio = inputs.log_prob - inputs.old_log_prob.detach()
    lengths = mask.sum(dim=-1).clamp(min=1)
    seq_log_ratio = (log_ratio * mask).sum(dim=-1) / lengths  # [B]
    token_log_ratio = inputs.log_prob - inputs.log_prob.detach() + seq_log_ratio.detach().unsqueeze(-1)
    ratio = torch.exp(token_log_ratio.clamp(max=10.0))
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - params.clip_low, 1 + params.clip_high)
    loss = torch.maximum(unclipped, clipped)
    metrics = {
        "clipfrac": masked_mean((clipped > unclipped).float(), mask).detach(),
        "approx_kl": _approx_kl(log_ratio, mask),
    }
    return PolicyLossOutputs(_with_is(loss, inputs), metrics)


# --------------------------------------------------------------------------- SAPO


@dataclass(frozen=True)
class SAPOParams:
    tau_pos: float = 1.0
    tau_neg: float = 1.05


@register_loss("sapo", SAPOParams)
def sapo_loss(inputs: PolicyLossInputs, params: SAPOParams) -> PolicyLossOutputs:
    """Soft-gated objective: ``−g_τ(r)·A`` with ``g_τ(r) = σ(τ(r − 1))·4/τ``; τ depends on the
    advantage's sign (``A > 0`` → τ_pos). verl forces ``seq-mean-token-mean`` for it; the
    ``sapo`` preset does the same."""
    adv, mask = inputs.advantages, inputs.response_mask
    log_ratio = _log_ratio(inputs)
    ratio = torch.exp(log_ratio)
    tau = torch.where(adv > 0, torch.full_like(adv, params.tau_pos), torch.full_like(adv, params.tau_neg))
    gate = torch.sigmoid(tau * (ratio - 1.0)) * (4.0 / tau)
    loss = -gate * adv
    return PolicyLossOutputs(_with_is(loss, inputs), {"approx_kl": _approx_kl(log_ratio, mask)})


# --------------------------------------------------------------------------- Clip-Cov / KL-Cov


@dataclass(frozen=True)
class ClipCovParams:
    clip_low: float = 0.2
    clip_high: float = 0.2
    ratio: float = 2e-4  # fraction of tokens whose gradient is cut
    cov_low: float = 1.0
    cov_high: float = 5.0
    seed: int | None = None  # None: global torch RNG (as verl); int: a private generator


def token_covariance(adv: torch.Tensor, log_prob: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(A − mean A)·(log π − mean log π)`` per token, means over the unmasked tokens."""
    return (adv - masked_mean(adv, mask)) * (log_prob.detach() - masked_mean(log_prob.detach(), mask))


@register_loss("clip_cov", ClipCovParams)
def clip_cov_loss(inputs: PolicyLossInputs, params: ClipCovParams) -> PolicyLossOutputs:
    """Clip-Cov (Cui et al. 2025): PPO clip, plus the gradient of a random
    ``max(1, ⌊ratio·N⌋)`` of the tokens with ``cov_low < Cov < cov_high`` (and not already
    clipped) is cut. Tokens are drawn from the batch passed in (verl draws per micro-batch;
    pass the whole mini-batch for a selection that does not depend on micro-batching)."""
    adv, mask = inputs.advantages, inputs.response_mask
    log_ratio = inputs.log_prob - inputs.old_log_prob.detach()  # verl: no clamp here
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - params.clip_low, 1 + params.clip_high)
    already_clipped = (clipped > unclipped) & mask.bool()
    cov = token_covariance(adv, inputs.log_prob, mask)
    eligible = (cov > params.cov_low) & (cov < params.cov_high) & mask.bool() & ~already_clipped
    candidates = torch.nonzero(eligible)
    n_cut = max(int(params.ratio * mask.sum().item()), 1)
    keep = torch.ones_like(adv)
    if len(candidates) > 0:
        gen = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
        perm = torch.randperm(len(candidates), generator=gen)
        chosen = candidates[perm[: min(n_cut, len(candidates))]]
        keep[chosen[:, 0], chosen[:, 1]] = 0
    loss = torch.maximum(unclipped, clipped) * keep
    metrics = {
        "clipfrac": masked_mean((keep == 0).float(), mask).detach(),
        "approx_kl": _approx_kl(log_ratio, mask),
    }
    return PolicyLossOutputs(_with_is(loss, inputs), metrics)


@dataclass(frozen=True)
class KLCovParams:
    ratio: float = 2e-4  # fraction of tokens that get the KL penalty
    kl_coef: float = 1.0


@register_loss("kl_cov", KLCovParams)
def kl_cov_loss(inputs: PolicyLossInputs, params: KLCovParams) -> PolicyLossOutputs:
    """KL-Cov (Cui et al. 2025): unclipped ``−A·r``; the top ``max(1, ⌊ratio·N⌋)`` tokens by
    covariance also pay ``kl_coef·|log r|``."""
    adv, mask = inputs.advantages, inputs.response_mask
    log_ratio = inputs.log_prob - inputs.old_log_prob.detach()
    ratio = torch.exp(log_ratio)
    loss = -adv * ratio
    valid = torch.nonzero(mask.reshape(-1).bool()).squeeze(-1)
    if len(valid) > 0:
        cov = token_covariance(adv, inputs.log_prob, mask).reshape(-1)[valid]
        k = max(1, int(len(valid) * params.ratio))
        top = valid[torch.topk(cov, k, largest=True).indices]
        penalty = torch.zeros(adv.numel(), dtype=loss.dtype)
        penalty[top] = 1.0
        loss = loss + params.kl_coef * log_ratio.abs() * penalty.view_as(loss)
    metrics = {"approx_kl": masked_mean(log_ratio.abs(), mask).detach()}
    return PolicyLossOutputs(_with_is(loss, inputs), metrics)


# --------------------------------------------------------------------------- REINFORCE


@dataclass(frozen=True)
class ReinforceParams:
    pass


@register_loss("reinforce", ReinforceParams)
def reinforce_loss(inputs: PolicyLossInputs, params: ReinforceParams) -> PolicyLossOutputs:
    """Plain policy gradient ``−A·log π`` (optionally IS-weighted); no ratio, no clip."""
    loss = -inputs.advantages * inputs.log_prob
    log_ratio = inputs.log_prob - inputs.old_log_prob.detach()
    return PolicyLossOutputs(_with_is(loss, inputs), {"approx_kl": _approx_kl(log_ratio, inputs.response_mask)})


# --------------------------------------------------------------------------- SFT


@dataclass(frozen=True)
class SFTParams:
    pass


@register_loss("sft", SFTParams)
def sft_loss(inputs: PolicyLossInputs, params: SFTParams) -> PolicyLossOutputs:
    """Supervised fine-tuning: ``−log π(o_t)`` per token (the negative log-likelihood of the
    given response). It reads neither the advantages nor the old log-probs — pass anything of
    shape ``[B, T]`` (e.g. zeros). With ``token-mean`` aggregation this is the usual
    cross-entropy over response tokens (the warm start's loss, :mod:`skpo.commands.warmstart_training`)."""
    return PolicyLossOutputs(-inputs.log_prob, {"nll": masked_mean(-inputs.log_prob, inputs.response_mask).detach()})


__all__ = [
    "CISPOParams",
    "ClipCovParams",
    "GSPOParams",
    "KLCovParams",
    "POLICY_LOSSES",
    "PPOClipParams",
    "PolicyLossInputs",
    "PolicyLossOutputs",
    "ReinforceParams",
    "SAPOParams",
    "SFTParams",
    "register_loss",
    "token_covariance",
]
