"""The algorithm core: pure functions of tensors — advantages, policy losses, aggregation,
KL/entropy, per-prompt trackers, prompt samplers — and their registries.

No model, no I/O, no method record (that is :mod:`skpo.methods`). Conventions follow verl: token
tensors ``[B, T]`` with a ``response_mask`` and a group ``index`` per row. Importing this package
registers every shipped plug-in; ``docs/methods.md`` says how to add one.
"""

from .advantages import (
    ADVANTAGE_ESTIMATORS,
    AdvantageInputs,
    batch_normalized,
    dapo_group_filter,
    group_normalized_scores,
    mc_step_advantages,
    oar_bilevel_weights,
    skpo_downstream_index,
)
from .losses import POLICY_LOSSES, PolicyLossInputs, PolicyLossOutputs
from .masked import AGG_MODES, AggDenominators, agg_loss, masked_mean, masked_sum, masked_var, masked_whiten
from .prompt_samplers import PROMPT_SAMPLERS, PlanRequest, PromptPlan, PromptSampler, build_prompt_sampler
from .stats import entropy_from_logits, kl_penalty, logprobs_from_logits
from .trackers import LengthTracker, ValueTracker, prioritized_sample, prioritized_weights

# isort: off
from . import policy_shaping, prime, copo, gtpo, lp_reg, papo, riskpo  # noqa: F401  (register the plug-ins, in this order)
# isort: on

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGG_MODES",
    "AdvantageInputs",
    "AggDenominators",
    "LengthTracker",
    "POLICY_LOSSES",
    "PROMPT_SAMPLERS",
    "PlanRequest",
    "PromptPlan",
    "PromptSampler",
    "build_prompt_sampler",
    "PolicyLossInputs",
    "PolicyLossOutputs",
    "ValueTracker",
    "agg_loss",
    "batch_normalized",
    "dapo_group_filter",
    "entropy_from_logits",
    "group_normalized_scores",
    "kl_penalty",
    "logprobs_from_logits",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "mc_step_advantages",
    "oar_bilevel_weights",
    "prioritized_sample",
    "prioritized_weights",
    "skpo_downstream_index",
]
