"""The algorithm core: pure functions of tensors — advantages, policy losses, aggregation,
KL/entropy, per-prompt trackers — and the method presets that combine them.

No model, no I/O. Conventions follow verl: token tensors ``[B, T]`` with a ``response_mask``
and a group ``index`` per row. Add a method by registering a function and writing a method
document; see ``docs/methods.md``. ``PRESETS`` / ``get_preset`` (the shipped method documents,
read from ``skpo/methods/``) are looked up lazily from :mod:`skpo.methods`.
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
from .presets import LossTerm, MethodPreset, term_loss
from .samplers import PROMPT_SAMPLERS, PlanRequest, PromptPlan, PromptSampler, build_prompt_sampler
from .stats import entropy_from_logits, kl_penalty, logprobs_from_logits
from .trackers import LengthTracker, ValueTracker, prioritized_sample, prioritized_weights

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGG_MODES",
    "AdvantageInputs",
    "AggDenominators",
    "LengthTracker",
    "LossTerm",
    "MethodPreset",
    "POLICY_LOSSES",
    "PROMPT_SAMPLERS",
    "PlanRequest",
    "PromptPlan",
    "PromptSampler",
    "build_prompt_sampler",
    "PRESETS",
    "PolicyLossInputs",
    "PolicyLossOutputs",
    "ValueTracker",
    "agg_loss",
    "batch_normalized",
    "dapo_group_filter",
    "entropy_from_logits",
    "get_preset",
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
    "term_loss",
]


def __getattr__(name: str):  # PEP 562: the shipped methods are files, read on first use
    if name in ("PRESETS", "get_preset"):
        import skpo.methods

        return getattr(skpo.methods, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


from . import policy_shaping  # noqa: E402,F401  (registers the ``policy_shaping`` loss)
from . import prime  # noqa: E402,F401  (registers the ``prime`` advantage estimator)
from . import copo, gtpo, lp_reg, papo, riskpo  # noqa: E402,F401  (register the GRPO-family plug-ins)
