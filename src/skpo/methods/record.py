"""Method records: which rollout, estimators, losses, aggregation and defaults a method uses.

A method is data. The shipped methods are YAML documents in ``skpo/methods/`` (loaded, merged
with a run's overrides and validated by :mod:`skpo.methods`); this module holds the record
they become and the checks that need only the algorithm registries. The trainer reads the
record and the registries' metadata — it never compares a method, estimator, loss, role or
rollout name.

A method has one or more ``LossTerm``s; each term applies to the rows of one *role* (the
roles a rollout kind produces: ``response`` for ordinary rollouts, ``upstream`` /
``downstream`` for SKPO's) and the total loss is ``Σ weight · agg(loss)``.

Defaults and readings (see ``docs/algorithms.md``):
- KL to a reference and entropy bonuses are off in every method (SKPO, DAPO, SPO and CISPO all
  train without them); ``kl_coef`` / ``entropy_coef`` switch them on.
- PPO-clip keeps verl's dual clip (c = 3) in the baselines; SKPO's upstream follows Eq. 6
  literally (plain clip, no dual clip).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from skpo.algorithms.advantages import ADVANTAGE_ESTIMATORS, OARWeightParams, estimator_inputs
from skpo.algorithms.losses import POLICY_LOSSES, PolicyLossInputs
from skpo.algorithms.masked import AGG_MODES, AggDenominators, agg_loss
from skpo.algorithms.prompt_samplers import PROMPT_SAMPLERS
from skpo.algorithms.token_stats import TOKEN_STATS

TOKEN_WEIGHTS = (None, "oar_g", "oar_p")
KL_ESTIMATORS = ("k1", "k2", "k3", "abs", "k1+", "k3+")
KL_PLACEMENTS = ("loss", "reward")


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

    @property
    def estimator_meta(self) -> Mapping[str, Any]:
        """The registered estimator's metadata (``group_key``, ``baseline``, ``needs``)."""
        return ADVANTAGE_ESTIMATORS.get(self.advantage).meta

    def validate(self) -> None:
        if not isinstance(self.role, str) or not self.role:
            raise ValueError(f"a term needs a role name (got {self.role!r})")
        if self.agg not in AGG_MODES:
            raise ValueError(f"agg must be one of {AGG_MODES} (got {self.agg!r})")
        if not self.weight >= 0:
            raise ValueError(f"weight must be >= 0 (got {self.weight!r})")
        ADVANTAGE_ESTIMATORS.get(self.advantage).make_params(self.advantage_params)
        POLICY_LOSSES.get(self.loss).make_params(self.loss_params)
        for name, _ in self.token_stat_requests():
            TOKEN_STATS.get(name)  # a plug-in naming an unregistered statistic is an error here

    def token_stat_requests(self) -> list[tuple[str, Any]]:
        """``(name, params)`` of every rollout-policy token statistic the estimator and the loss
        read (``token_stats`` metadata), each once, with the parameter record of the plug-in
        that declared it first (estimator, then loss)."""
        requests: dict[str, Any] = {}
        for registry, name, values in ((ADVANTAGE_ESTIMATORS, self.advantage, self.advantage_params),
                                       (POLICY_LOSSES, self.loss, self.loss_params)):
            entry = registry.get(name)
            for stat in entry.meta.get("token_stats", ()):
                if stat not in requests:
                    requests[stat] = entry.make_params(dict(values))
        return list(requests.items())

    def make_state(self) -> Any:
        """A fresh state object for a stateful estimator (``state`` metadata), else None."""
        entry = ADVANTAGE_ESTIMATORS.get(self.advantage)
        cls = entry.meta.get("state")
        return None if cls is None else cls(entry.make_params(dict(self.advantage_params)))


@dataclass(frozen=True)
class Method:
    """Everything that distinguishes one method from another (a resolved method document).

    Attributes:
        rollout: a registered rollout kind (``skpo.rollout.base.ROLLOUTS``) and
            ``rollout_params`` its parameters.
        group_size: answers per prompt (SKPO: segments in parallel = downstream answers).
        filter_groups / max_gen_batches: DAPO's dynamic sampling on group-relative terms and
            its most rounds of prompts per step.
        value_tracker / length_tracker: per-prompt trackers kept across steps.
        prompt_sampling / prompt_sampling_params: a registered prompt sampler
            (``skpo.algorithms.prompt_samplers.PROMPT_SAMPLERS``: ``uniform``, SPO's ``prioritized``,
            ``knapsack``, ``vas``) and its parameters.
        token_weights / token_weight_params: OAR importance (``oar_g`` gradient proxy,
            ``oar_p`` perturbation) and the Bi-Level reshaping's parameters.
        agg_scale: constant of ``seq-mean-token-sum-norm``; ``max_response_length`` means
            the trainer's maximum response length (Dr. GRPO).
        kl_coef / kl_estimator / kl_placement: KL to the initial policy, in the loss (verl's
            ``use_kl_loss``) or subtracted from the token rewards before the advantage
            (``use_kl_in_reward``).
        reward_model / reward_model_params: an auxiliary model trained online that gives
            per-token rewards (``skpo.models.reward_models``; PRIME's ``implicit_prm``), for
            the estimators that need ``token_rewards``.
        source: the paper (and the part of it) the defaults come from.
    """

    name: str
    description: str
    rollout: str
    terms: tuple[LossTerm, ...]
    group_size: int = 8
    rollout_params: Mapping[str, Any] = field(default_factory=_frozen)
    filter_groups: bool = False
    max_gen_batches: int = 3
    value_tracker: bool = False
    length_tracker: bool = False
    prompt_sampling: str = "uniform"
    prompt_sampling_params: Mapping[str, Any] = field(default_factory=_frozen)
    token_weights: str | None = None
    token_weight_params: Mapping[str, Any] = field(default_factory=_frozen)
    agg_scale: str | None = None
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    kl_placement: str = "loss"
    entropy_coef: float = 0.0
    reward_range: tuple[float, float] = (-1.0, 1.0)
    source: str = ""
    reward_model: str | None = None
    reward_model_params: Mapping[str, Any] = field(default_factory=_frozen)

    def term(self, role: str) -> LossTerm:
        """The term of ``role`` (a method has at most one per role)."""
        for t in self.terms:
            if t.role == role:
                return t
        raise KeyError(f"{self.name}: no term for role {role!r}; roles: {[t.role for t in self.terms]}")

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(t.role for t in self.terms)

    def validate(self) -> Method:
        """Checks that need only the algorithm registries (the rollout kind's own checks are in
        :func:`skpo.methods.resolve_method`)."""
        sampler, params = PROMPT_SAMPLERS.entry_and_params(self.prompt_sampling, self.prompt_sampling_params,
                                                           f"{self.name}: prompt_sampling")
        if hasattr(params, "check_group_size"):  # a budget of prompts × group_size must cover its floors
            try:
                params.check_group_size(self.group_size)
            except ValueError as err:
                raise ValueError(f"{self.name}: group_size: {err}") from None
        if "value_tracker" in sampler.meta.get("needs", ()) and not self.value_tracker:
            raise ValueError(f"{self.name}: {self.prompt_sampling} prompt sampling needs value_tracker=True")
        if sampler.meta.get("allocates") and self.filter_groups:
            raise ValueError(f"{self.name}: {self.prompt_sampling} prompt sampling fixes the step's rollout budget; "
                             "DAPO's refill would draw more: set filter_groups: false")
        if self.token_weights not in TOKEN_WEIGHTS:
            raise ValueError(f"{self.name}: token_weights must be one of {TOKEN_WEIGHTS}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"{self.name}: kl_estimator must be one of {KL_ESTIMATORS}")
        if self.kl_placement not in KL_PLACEMENTS:
            raise ValueError(f"{self.name}: kl_placement must be one of {KL_PLACEMENTS}")
        if self.group_size < 1:
            raise ValueError(f"{self.name}: group_size must be >= 1")
        if self.max_gen_batches < 1:
            raise ValueError(f"{self.name}: max_gen_batches must be >= 1")
        if self.kl_coef < 0 or self.entropy_coef < 0:
            raise ValueError(f"{self.name}: kl_coef and entropy_coef must be >= 0")
        if not self.terms:
            raise ValueError(f"{self.name}: a method needs at least one loss term")
        if len(set(self.roles)) != len(self.roles):
            raise ValueError(f"{self.name}: one term per role (got roles {list(self.roles)})")
        for term in self.terms:
            try:
                term.validate()
            except (KeyError, ValueError) as err:
                raise ValueError(f"{self.name}: term {term.role!r}: {err.args[0] if isinstance(err, KeyError) else err}") from None
            reads = estimator_inputs(term.estimator_meta)
            if "baseline" in reads and not self.value_tracker:
                raise ValueError(f"{self.name}: estimator {term.advantage!r} reads the value tracker: set value_tracker: true")
            if "token_weights" in reads and self.token_weights is None:
                raise ValueError(f"{self.name}: estimator {term.advantage!r} needs token weights: set token_weights")
            if "token_rewards" in reads and self.reward_model is None:
                raise ValueError(f"{self.name}: estimator {term.advantage!r} needs per-token rewards: set reward_model")
        if self.reward_model_params and self.reward_model is None:
            raise ValueError(f"{self.name}: reward_model_params given without a reward_model")
        if self.token_weights is not None:
            unknown = sorted(set(self.token_weight_params) - set(OARWeightParams.__dataclass_fields__))
            if unknown:
                raise ValueError(f"{self.name}: token_weight_params: unknown {unknown}; known: {sorted(OARWeightParams.__dataclass_fields__)}")
            OARWeightParams(**dict(self.token_weight_params))  # value checks (answer_mode)
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


