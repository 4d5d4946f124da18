"""Critique-GRPO's policy shaping: the loss on off-policy refinement tokens.

Critique-GRPO (Zhang et al. 2025, arXiv 2506.03106) trains on the policy's own answers and on
its critique-guided refinements. A refinement was sampled under the refinement prompt
``(question, previous answer, critique)`` but is trained as an answer to the question alone,
so it is off-policy for ``π_θ(· | q)``. Its tokens get no importance ratio and no clip; their
probability under the current policy goes through the shaping function

    f(π) = π / (π + γ)        (γ = 0.1 in the paper and its code, ``off_policy_reshape="p_div_p_0.1"``)

and the loss is ``−A · f(π_θ(o_t | q, o_<t))``. Its gradient in ``log π`` is
``−A · γπ / (π + γ)²``: a token the policy finds unlikely (π ≪ γ) gets weight ≈ π/γ of an
ordinary policy-gradient token, a likely one (π ≫ γ) ≈ γ/π — the update concentrates on the
tokens in between, "correct but unfamiliar" ones when ``A > 0``.

Numerics: ``f(π) = σ(log π − log γ)`` (the same value, no ``exp`` overflow or ``0/0``).
The source computes ``f`` from ``exp(log_prob)`` of the training forward; so does this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .losses import PolicyLossInputs, PolicyLossOutputs, _with_is, register_loss
from .masked import masked_mean

__all__ = ["PolicyShapingParams", "policy_shaping_loss", "shaped_probability"]


@dataclass(frozen=True)
class PolicyShapingParams:
    gamma: float = 0.1  # γ of f(π) = π / (π + γ)

    def __post_init__(self) -> None:
        if not self.gamma > 0:
            raise ValueError(f"gamma must be > 0 (got {self.gamma!r})")


def shaped_probability(log_prob: torch.Tensor, gamma: float) -> torch.Tensor:
    """``f(π) = π / (π + γ)`` from ``log π`` (any shape), as ``σ(log π − log γ)``."""
    return torch.sigmoid(log_prob - math.log(gamma))


@register_loss("policy_shaping", PolicyShapingParams)
def policy_shaping_loss(inputs: PolicyLossInputs, params: PolicyShapingParams) -> PolicyLossOutputs:
    """``−A · f(π_θ(o_t))`` with ``f(π) = π/(π+γ)``: no ratio to π_old, no clip (Critique-GRPO
    on refinement tokens). Shapes: every input ``[B, T]``; ``old_log_prob`` is not read."""
    shaped = shaped_probability(inputs.log_prob, params.gamma)
    loss = -inputs.advantages * shaped
    mask = inputs.response_mask
    metrics = {
        "shaped_prob": masked_mean(shaped, mask).detach(),  # mean f(π)
        "token_prob": masked_mean(inputs.log_prob.exp(), mask).detach(),  # mean π (the source's off_policy_prob)
    }
    return PolicyLossOutputs(_with_is(loss, inputs), metrics)
