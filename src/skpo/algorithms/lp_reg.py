"""Lp-Reg (Huang et al. 2025, "Low-probability Tokens Sustain Exploration in RLVR", arXiv 2510.03222).

RLVR keeps pushing down rare tokens of failed answers, among them the useful "reasoning
sparks". Lp-Reg pulls the lowest-probability negative-advantage tokens back toward a proxy
distribution: the rollout policy min-p filtered (presumed noise removed) and renormalised.

Source: the authors' code, CarlanLark/Lp-Reg-dev@33b27e2 —
``verl/trainer/ppo/core_algos.py::compute_policy_loss_lp_reg`` and
``verl/workers/actor/dp_actor.py::apply_min_p`` (proxy log-probs from the old-log-prob pass,
``minp_old_log_prob=True`` in every released recipe). Per token, over the tokens of the batch
passed in (``[B, T]``)::

    π_proxy(v) ∝ π_old(v)·1[π_old(v) ≥ κ·max_w π_old(w)]          (token statistic, filtered logits −1e4)
    N⁻ = {t: A_t < 0};  k = max(1, ⌊ρ⁻·|N⁻|⌋);  S⁻ = the k tokens of N⁻ with the lowest log π_θ  (only if k > 1)
    S  = {t ∈ S⁻ : log π_θ(o_t) < log π_proxy(o_t)}                 (likewise for A > 0 with ρ⁺; ρ⁺ = 0 in the recipes)
    ℓ_t = max(−A_t·r_t, −A_t·clip(r_t, 1−ε_l, 1+ε_h))              t ∉ S    (no dual clip)
    ℓ_t = −A_t·r_t + β·k3(log π_proxy, log π_θ)                      t ∈ S    (no ratio clip)
    k3 = e^Δ − Δ − 1,  Δ = log π_proxy − log π_θ  (clamped ±20, result ±10: verl's low_var_kl)

Readings and deviations (stated):
- The selection runs over the tokens of the batch the loss is given — a micro-batch in the
  trainer, as in the authors' code (per micro-batch).
- ``k > 1`` is required for any token to be regularised (the code's ``if neg_logp_k > 1``): with
  ρ = 1 % a batch needs at least 200 negative tokens.
- The ratio is not clamped before ``exp`` (the authors' code), unlike ``ppo_clip``.
- min-p filters the sampling distribution (logits / temperature); the authors filter the
  temperature-1 logits and then divide by the temperature: the same at temperature 1, the
  recipes' setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .losses import PolicyLossInputs, PolicyLossOutputs, _approx_kl, _with_is, register_loss
from .masked import masked_mean
from .stats import kl_penalty


@dataclass(frozen=True)
class LpRegParams:
    clip_low: float = 1.0  # ratio range [1 − clip_low, 1 + clip_high]: the recipes' 1.0 / 9.0 (clipping
    clip_high: float = 9.0  # effectively off)
    min_p: float = 0.02  # κ: proxy keeps tokens with π ≥ κ·max π (recipes 0.02; config default 0.1)
    neg_fraction: float = 0.01  # ρ⁻: share of negative-advantage tokens considered (Qwen3-14B; 0.005 for 32B)
    pos_fraction: float = 0.0  # ρ⁺ (0 in every recipe: positive tokens never regularised)
    kl_coef: float = 1.0  # β

    def __post_init__(self) -> None:
        if not 0.0 < self.min_p <= 1.0:
            raise ValueError(f"min_p must be in (0, 1] (got {self.min_p})")
        for name in ("neg_fraction", "pos_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] (got {getattr(self, name)})")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0 (got {self.kl_coef})")


def lowest_log_prob_tokens(log_prob: torch.Tensor, candidates: torch.Tensor, fraction: float) -> torch.Tensor:
    """``[B, T]`` bool: the ``k = max(1, ⌊fraction·n⌋)`` candidates with the lowest ``log_prob``
    (``n`` = number of candidates), none unless ``k > 1`` (the authors' code)."""
    chosen = torch.zeros_like(candidates, dtype=torch.bool)
    flat = torch.nonzero(candidates.reshape(-1)).squeeze(-1)
    k = max(1, int(len(flat) * fraction))
    if len(flat) == 0 or k <= 1:
        return chosen
    lowest = flat[torch.topk(log_prob.detach().reshape(-1)[flat], k, largest=False).indices]
    chosen.view(-1)[lowest] = True
    return chosen


@register_loss("lp_reg", LpRegParams, token_stats=("minp_proxy_log_prob",))
def lp_reg_loss(inputs: PolicyLossInputs, params: LpRegParams) -> PolicyLossOutputs:
    """Lp-Reg: PPO clip, except that the lowest-probability negative tokens that sit below the
    min-p proxy pay ``β·k3`` toward it instead (unclipped ``−A·r``); see the module docstring.
    Reads ``extras["minp_proxy_log_prob"]`` ``[B, T]`` (the rollout policy's proxy log-probs)."""
    adv, mask = inputs.advantages, inputs.response_mask
    proxy = inputs.extras["minp_proxy_log_prob"].detach()
    log_ratio = inputs.log_prob - inputs.old_log_prob.detach()
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - params.clip_low, 1 + params.clip_high)
    loss = torch.maximum(unclipped, clipped)
    valid = mask.bool()
    selected = (lowest_log_prob_tokens(inputs.log_prob, valid & (adv < 0), params.neg_fraction)
                | lowest_log_prob_tokens(inputs.log_prob, valid & (adv > 0), params.pos_fraction))
    below_proxy = selected & (inputs.log_prob.detach() < proxy)
    regularised = unclipped + params.kl_coef * kl_penalty(inputs.log_prob, proxy, "k3")
    loss = torch.where(below_proxy, regularised, loss)
    metrics = {
        "clipfrac": masked_mean((clipped > unclipped).float(), mask).detach(),
        "lp_reg_frac": masked_mean(below_proxy.float(), mask).detach(),
        "approx_kl": _approx_kl(log_ratio, mask),
    }
    return PolicyLossOutputs(_with_is(loss, inputs), metrics)


__all__ = ["LpRegParams", "lowest_log_prob_tokens", "lp_reg_loss"]
