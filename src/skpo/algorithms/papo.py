"""PAPO — entropy-polarity advantage reweighting (Zhang et al. 2026, "Entropy Polarity in
Reinforcement Fine-Tuning: Direction, Asymmetry, and Control", arXiv 2605.11775).

DERIVED, not the paper's formula. Only the abstract and third-party summaries of the paper
were readable and no code is public; what they state is: a first-order approximation of each
token's entropy change splits into a sampled-token contribution and a state-wise distributional
correction, its sign is the token's "entropy polarity", and PAPO keeps both polarity branches
and reweights advantages, steered online by the empirical entropy trajectory. Everything below
that makes this concrete is derived (reference: ``grpo-variants.md`` §2.11 and
``skpo-oar-papo.md`` §3.2–3.3):

- **Polarity (derived, softmax-logit first order).** A vanilla policy-gradient step on the
  sampled token ``a`` moves the logits by ``Δz = η·A·(e_a − π)``, so
  ``ΔH_t ≈ η·A_t·g_t`` with ``g_t = E_{b~π}[S_b] − S_a`` and ``S_b = π_b (log π_b + H)``
  (``S_a``: sampled-token contribution; ``E_π[S] = Σ_b π_b² (log π_b + H)``: state-wise
  correction). ``g_t`` is the ``entropy_gain`` token statistic of the rollout policy. A token is
  *expanding* when ``A_t·g_t > 0``, else *contracting*.
- **Reweighting (derived).** ``A'_t = A_t·(1 + λ)`` on expanding tokens, ``A_t·(1 − λ)`` on the
  others; both branches keep weight while ``|λ| < 1``.
- **Controller (derived).** ``λ = clip(κ·(H_target − H̄)/H_target, −λ_max, λ_max)``: entropy below
  its target shifts weight toward expanding updates, above it toward contracting ones.
  Readings: ``H̄`` is an exponential moving average (momentum ``m``) of the batch's mean
  token entropy under the rollout policy, updated with this step's batch before ``λ`` is read;
  ``H_target`` defaults to the first step's mean entropy (the "ratio to the initial entropy"
  phase signal), so the first step is plain GRPO.
- The base advantage is GRPO's group z-score; ``κ = 0`` gives GRPO exactly.
- No number here comes from the paper: ``κ = 1``, ``λ_max = 0.5``, ``m = 0.9`` are choices.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from .advantages import ADVANTAGE_ESTIMATORS, AdvantageInputs, GRPOParams, grpo_advantage
from .masked import masked_mean


@dataclass(frozen=True)
class PAPOParams:
    epsilon: float = 1e-6  # GRPO's group z-score
    norm_by_std: bool = True
    gain: float = 1.0  # κ (derived; 0 = GRPO)
    max_shift: float = 0.5  # λ_max < 1 keeps both polarity branches (derived)
    target_entropy: float | None = None  # H_target; None = the first step's mean entropy (reading)
    momentum: float = 0.9  # m of the running mean entropy H̄ (reading)

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_shift < 1.0:
            raise ValueError(f"max_shift must be in [0, 1) so both branches keep weight (got {self.max_shift})")
        if self.gain < 0:
            raise ValueError(f"gain must be >= 0 (got {self.gain})")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1) (got {self.momentum})")
        if self.target_entropy is not None and not self.target_entropy > 0:
            raise ValueError(f"target_entropy must be > 0 or null (got {self.target_entropy})")


class EntropyController:
    """PAPO's online phase signal (derived): the running mean entropy ``H̄`` against a target,
    turned into the weight shift ``λ``. State kept across steps and checkpointed."""

    def __init__(self, params: PAPOParams) -> None:
        self.params = params
        self.target: float | None = params.target_entropy
        self.running: float | None = None
        self.steps = 0
        self.last_shift = 0.0
        self.last_expanding_share = 0.0

    def observe(self, mean_entropy: float) -> float:
        """Fold in this step's mean token entropy; return the shift ``λ`` for this step."""
        p = self.params
        h = float(mean_entropy)
        if self.target is None:
            self.target = h
        self.running = h if self.running is None else p.momentum * self.running + (1 - p.momentum) * h
        self.steps += 1
        self.last_shift = controller_shift(self.running, self.target, p.gain, p.max_shift)
        return self.last_shift

    def metrics(self) -> dict[str, float]:
        return {"papo_shift": self.last_shift, "papo_entropy_running": self.running or 0.0,
                "papo_entropy_target": self.target or 0.0, "papo_expanding_share": self.last_expanding_share}

    def state_dict(self) -> dict:
        return {"params": asdict(self.params), "target": self.target, "running": self.running, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        if state["params"] != asdict(self.params):
            raise ValueError(f"PAPO controller state was saved with {state['params']}, this run has {asdict(self.params)}")
        self.target, self.running, self.steps = state["target"], state["running"], int(state["steps"])


def controller_shift(running: float, target: float, gain: float, max_shift: float) -> float:
    """``λ = clip(κ·(H_target − H̄)/H_target, −λ_max, λ_max)`` (derived); 0 for a zero target."""
    if not target > 0 or not math.isfinite(running):
        return 0.0
    return min(max(gain * (target - running) / target, -max_shift), max_shift)


def polarity_weights(advantages: torch.Tensor, entropy_gain: torch.Tensor, shift: float) -> torch.Tensor:
    """``[B, T]`` weights ``1 + λ`` where the update expands entropy (``A·g > 0``), else ``1 − λ``
    (derived)."""
    expanding = advantages * entropy_gain > 0
    return torch.where(expanding, torch.full_like(advantages, 1 + shift), torch.full_like(advantages, 1 - shift))


@ADVANTAGE_ESTIMATORS.register("papo", PAPOParams, group_key="prompt", token_stats=("entropy", "entropy_gain"),
                               state=EntropyController)
def papo_advantage(batch: AdvantageInputs, params: PAPOParams) -> torch.Tensor:
    """PAPO (derived): GRPO's advantage reweighted per token by its entropy polarity, the
    weight shift set by the entropy controller (``batch.state``). Reads the rollout policy's
    ``entropy`` and ``entropy_gain`` token statistics ``[B, T]``; returns ``[B, T]``."""
    batch.require("index", "token_stats", "state")
    stats = batch.token_stats
    assert stats is not None  # require() raised otherwise
    missing = [k for k in ("entropy", "entropy_gain") if k not in stats]
    if missing:
        raise ValueError(f"papo needs token statistics {missing}")
    mask = batch.response_mask
    adv = grpo_advantage(batch, GRPOParams(params.epsilon, params.norm_by_std))
    shift = batch.state.observe(masked_mean(stats["entropy"].to(adv.dtype), mask).item())
    expanding = (adv * stats["entropy_gain"].to(adv.dtype) > 0) & mask.bool()
    batch.state.last_expanding_share = float(expanding.sum() / mask.sum().clamp(min=1))
    return adv * polarity_weights(adv, stats["entropy_gain"].to(adv.dtype), shift) * mask.to(adv.dtype)


__all__ = ["EntropyController", "PAPOParams", "controller_shift", "papo_advantage", "polarity_weights"]
