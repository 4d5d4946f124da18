"""Method presets: each method is a small record of which rollout, estimator, loss,
aggregation and defaults it uses, so the trainer never branches on a method name.

A preset has one or more ``LossTerm``s; each term applies to the rows of one *role*
(``response`` for ordinary group/single rollouts, ``upstream`` / ``downstream`` for SKPO) and
the total loss is ``Σ weight · agg(loss)``. Presets are immutable; configs override fields
with ``dataclasses.replace``.

Defaults and readings (see ``docs/algorithms.md``):
- KL to a reference and entropy bonuses are off in every preset (SKPO, DAPO, SPO and CISPO
  all train without them); ``kl_coef`` / ``entropy_coef`` switch them on.
- PPO-clip keeps verl's dual clip (c = 3) in the baselines; SKPO's upstream follows Eq. 6
  literally (plain clip, no dual clip).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import torch

from .advantages import ADVANTAGE_ESTIMATORS
from .losses import POLICY_LOSSES, PolicyLossInputs
from .masked import AGG_MODES, AggDenominators, agg_loss

ROLES = ("response", "upstream", "downstream")
ROLLOUTS = ("group", "single", "skpo", "mc_steps")
PROMPT_SAMPLING = ("uniform", "prioritized")
TOKEN_WEIGHTS = (None, "oar_g", "oar_p")


def _frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class LossTerm:
    """One policy-gradient term: which rows, which advantage, which loss, how aggregated."""

    role: str
    advantage: str
    loss: str
    agg: str
    weight: float = 1.0
    advantage_params: Mapping[str, Any] = field(default_factory=_frozen)
    loss_params: Mapping[str, Any] = field(default_factory=_frozen)

    def validate(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES} (got {self.role!r})")
        if self.agg not in AGG_MODES:
            raise ValueError(f"agg must be one of {AGG_MODES} (got {self.agg!r})")
        ADVANTAGE_ESTIMATORS.get(self.advantage).make_params(self.advantage_params)
        POLICY_LOSSES.get(self.loss).make_params(self.loss_params)


@dataclass(frozen=True)
class MethodPreset:
    """Everything that distinguishes one method from another.

    Attributes:
        rollout: ``group`` (G answers per prompt), ``single`` (one answer per prompt, SPO),
            ``skpo`` (two-phase), ``mc_steps`` (group + Monte Carlo step values).
        group_size: answers per prompt (SKPO: segments in parallel = downstream answers).
        filter_groups: DAPO dynamic sampling on group-relative terms.
        value_tracker / length_tracker: per-prompt trackers kept across steps.
        prompt_sampling: ``uniform`` or SPO's ``prioritized`` (needs the value tracker).
        token_weights: OAR importance (``oar_g`` gradient proxy, ``oar_p`` perturbation).
        agg_scale: constant of ``seq-mean-token-sum-norm``; ``max_response_length`` means
            the trainer's maximum response length (Dr. GRPO).
    """

    name: str
    description: str
    rollout: str
    terms: tuple[LossTerm, ...]
    group_size: int = 8
    filter_groups: bool = False
    value_tracker: bool = False
    length_tracker: bool = False
    prompt_sampling: str = "uniform"
    token_weights: str | None = None
    agg_scale: str | None = None
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    reward_range: tuple[float, float] = (-1.0, 1.0)

    def validate(self) -> "MethodPreset":
        if self.rollout not in ROLLOUTS:
            raise ValueError(f"{self.name}: rollout must be one of {ROLLOUTS} (got {self.rollout!r})")
        if self.prompt_sampling not in PROMPT_SAMPLING:
            raise ValueError(f"{self.name}: prompt_sampling must be one of {PROMPT_SAMPLING}")
        if self.prompt_sampling == "prioritized" and not self.value_tracker:
            raise ValueError(f"{self.name}: prioritized prompt sampling needs value_tracker=True")
        if self.token_weights not in TOKEN_WEIGHTS:
            raise ValueError(f"{self.name}: token_weights must be one of {TOKEN_WEIGHTS}")
        if self.group_size < 1:
            raise ValueError(f"{self.name}: group_size must be >= 1")
        if not self.terms:
            raise ValueError(f"{self.name}: a preset needs at least one loss term")
        for term in self.terms:
            term.validate()
        roles = {t.role for t in self.terms}
        if self.rollout == "skpo" and roles != {"upstream", "downstream"}:
            raise ValueError(f"{self.name}: the skpo rollout needs one upstream and one downstream term")
        if self.rollout != "skpo" and roles != {"response"}:
            raise ValueError(f"{self.name}: rollout {self.rollout!r} produces only 'response' rows")
        return self


def term_loss(
    term: LossTerm, inputs: PolicyLossInputs, denominators: AggDenominators | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The aggregated (unweighted) loss of one term and its metrics.

    ``denominators`` must be computed once over the term's rows of the whole mini-batch so
    that micro-batch losses add up to the mini-batch loss.
    """
    entry = POLICY_LOSSES.get(term.loss)
    out = entry.fn(inputs, entry.make_params(term.loss_params))
    return agg_loss(out.loss_mat, inputs.response_mask, term.agg, denominators), out.metrics


def _ppo(low: float = 0.2, high: float = 0.2, dual: float | None = 3.0) -> Mapping[str, Any]:
    return _frozen({"clip_low": low, "clip_high": high, "dual_clip": dual})


def _response(advantage: str, loss: str, agg: str, adv_params=None, loss_params=None) -> tuple[LossTerm, ...]:
    return (LossTerm("response", advantage, loss, agg, 1.0, _frozen(adv_params), _frozen(loss_params)),)


PRESETS: dict[str, MethodPreset] = {
    p.name: p.validate()
    for p in [
        MethodPreset(
            "grpo", "GRPO: group z-score advantage, PPO clip, sequence-mean of token means",
            "group", _response("grpo", "ppo_clip", "seq-mean-token-mean", loss_params=_ppo()),
        ),
        MethodPreset(
            "dr_grpo", "Dr. GRPO: no std division, token sums over a constant length",
            "group",
            _response("grpo", "ppo_clip", "seq-mean-token-sum-norm", {"norm_by_std": False}, _ppo()),
            agg_scale="max_response_length",
        ),
        MethodPreset(
            "dapo", "DAPO: clip-higher 0.2/0.28, token-mean, dynamic sampling of mixed groups",
            "group", _response("grpo", "ppo_clip", "token-mean", loss_params=_ppo(0.2, 0.28)),
            filter_groups=True,
        ),
        MethodPreset(
            "cispo", "CISPO: stop-gradient clipped IS weight times A·log π, token-mean",
            "group",
            _response("grpo", "cispo", "token-mean", loss_params={"clip_low": 0.2, "clip_high": 0.28}),
        ),
        MethodPreset(
            "gspo", "GSPO: sequence-level importance ratio, tight clip 3e-4/4e-4",
            "group", _response("grpo", "gspo", "seq-mean-token-mean"),
        ),
        MethodPreset(
            "sapo", "SAPO: soft sigmoid gate instead of a hard clip",
            "group", _response("grpo", "sapo", "seq-mean-token-mean"),
        ),
        MethodPreset(
            "rloo", "RLOO: leave-one-out baseline, PPO clip",
            "group", _response("rloo", "ppo_clip", "seq-mean-token-mean", loss_params=_ppo()),
        ),
        MethodPreset(
            "spo", "SPO: one answer per prompt, per-prompt KL-adaptive value baseline, prioritised prompts",
            "single", _response("spo", "ppo_clip", "token-mean", loss_params=_ppo(0.2, 0.28)),
            group_size=1, value_tracker=True, prompt_sampling="prioritized",
        ),
        MethodPreset(
            "mc_dense", "Monte Carlo dense reward (VinePPO): step values from K continuations",
            "mc_steps", _response("mc_step", "ppo_clip", "token-mean", loss_params=_ppo()),
        ),
        MethodPreset(
            "oar", "OAR: GRPO advantage reshaped per token by outcome-grounded importance (OAR-G)",
            "group", _response("oar", "ppo_clip", "seq-mean-token-mean", loss_params=_ppo()),
            token_weights="oar_g",
        ),
        MethodPreset(
            "skpo",
            "SKPO: upstream segment with MC reward and SPO baseline; G downstream answers from [s, q]",
            "skpo",
            (
                LossTerm("upstream", "skpo_upstream", "ppo_clip", "seq-mean-token-mean", 0.5,
                         loss_params=_ppo(0.2, 0.2, None)),
                LossTerm("downstream", "skpo_downstream", "cispo", "token-mean", 0.5,
                         loss_params=_frozen({"clip_low": 0.2, "clip_high": 0.28})),
            ),
            value_tracker=True, length_tracker=True, prompt_sampling="prioritized",
        ),
    ]
}


def get_preset(name: str) -> MethodPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; presets: {sorted(PRESETS)}") from None
