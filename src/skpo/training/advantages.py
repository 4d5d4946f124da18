"""The advantage phase: each loss term's registered estimator on its rows, with the inputs its
metadata names supplied from one table (:data:`INPUTS`), DAPO's group filter on group-relative
estimators, and the estimators' outputs for their losses (``docs/methods.md``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from skpo.algorithms import (
    ADVANTAGE_ESTIMATORS,
    AdvantageInputs,
    dapo_group_filter,
    kl_penalty,
    masked_mean,
    oar_bilevel_weights,
)
from skpo.algorithms.advantages import estimator_inputs, is_group_relative
from skpo.engines import mix_seed
from skpo.methods import Method, joint_roles
from skpo.models.answer_probe import oar_importance
from skpo.rows import Rows, last_token_rewards
from skpo.training.actor import Actor
from skpo.training.run_state import RunState

_FIELDS = {f.name for f in dataclasses.fields(AdvantageInputs)}


@dataclasses.dataclass
class AdvantageContext:
    """What the estimators' inputs are made from in one step."""

    method: Method
    state: RunState
    actor: Actor
    source: Any  # the prompt source: answer markers, the verifier
    tokenizer: Any
    seed: int
    step: int
    metrics: dict[str, float]


def _value_baseline(ctx: AdvantageContext, rows: Rows, role: str) -> torch.Tensor:
    """The value tracker's pre-update baseline per row (unbiased A); rows whose prompt the
    tracker has never seen get the default (0): their advantage is the raw reward."""
    tracker = ctx.state.value_tracker
    assert tracker is not None  # (the run state keeps one for an estimator that reads it)
    ctx.metrics[f"{role}/first_visit_share"] = sum(k not in tracker for k in rows.prompt_keys) / max(1, len(rows))
    return tracker.baseline(rows.prompt_keys)


def _token_weights(ctx: AdvantageContext, rows: Rows, role: str) -> torch.Tensor:
    """OAR's per-token weights (Bi-Level reshaping of the probe's importance), ``[B, T]``."""
    responses = [rows.response_ids[b, : int(n)].tolist() for b, n in enumerate(rows.lengths())]
    reshaping = dict(ctx.method.token_weight_params)
    answer_mode = reshaping.pop("answer_mode", "answer_mean")
    assert ctx.method.token_weights is not None  # (called for a method with token weights)
    with ctx.actor.autocast():
        importance, scored = oar_importance(
            ctx.actor.policy, rows.prompt_ids, responses, ctx.source.answer_marker_ids(), mode=ctx.method.token_weights,
            pad_id=ctx.actor.pad_id, generator=torch.Generator().manual_seed(mix_seed(ctx.seed, ctx.step, 31)),
            answer_mode=answer_mode,
        )
    weights = oar_bilevel_weights(importance, scored, **reshaping)
    full = torch.ones_like(rows.response_mask)
    full[:, : weights.shape[1]] = weights[:, : full.shape[1]]
    return full


def _answers(ctx: AdvantageContext, rows: Rows, role: str) -> list[str | None]:
    """Each row's final answer as the source's verifier extracts it: rollouts keep only
    rewards, so the responses are decoded and checked again."""
    by_key = {it.key: it for it in ctx.source.items}
    texts = [ctx.tokenizer.decode(rows.response_ids[b, : int(n)].tolist(), skip_special_tokens=True)
             for b, n in enumerate(rows.lengths())]
    return [v.extracted for v in ctx.source.score([by_key[k] for k in rows.prompt_keys], texts)]


# input name (an estimator's ``needs``, or ``baseline``) → how it is made from a term's rows;
# inputs a rollout kind or reward model attached to ``rows.extra`` need no entry
INPUTS: dict[str, Callable[[AdvantageContext, Rows, str], Any]] = {
    "baseline": _value_baseline,
    "token_weights": _token_weights,
    "response_ids": lambda ctx, rows, role: rows.response_ids,
    "answers": _answers,
}


def _estimator_batch(ctx: AdvantageContext, term, sub: Rows) -> AdvantageInputs:
    """``AdvantageInputs`` of one term's rows: rewards on the last token (minus β·KL with KL in
    the reward), group ids, what the rows carry in ``extra``, and what the estimator reads."""
    method = ctx.method
    token_rewards = last_token_rewards(sub.rewards, sub.response_mask)
    if method.kl_coef > 0 and method.kl_placement == "reward":
        # verl's use_kl_in_reward: r_t − β·KL(π_old ‖ π_ref) per token, before the estimator
        assert sub.ref_log_probs is not None  # (a KL term: the log-prob phase filled them)
        kl = kl_penalty(sub.old_log_probs, sub.ref_log_probs, method.kl_estimator)
        token_rewards = token_rewards - method.kl_coef * kl * sub.response_mask
        ctx.metrics[f"{term.role}/kl_in_reward"] = masked_mean(kl, sub.response_mask).item()
    batch = AdvantageInputs(token_rewards, sub.response_mask, sub.groups())
    for name, value in sub.extra.items():  # a rollout kind's or reward model's per-row inputs
        if name in _FIELDS:
            setattr(batch, name, value)
    for name in estimator_inputs(term.estimator_meta):
        if name in INPUTS:
            setattr(batch, name, INPUTS[name](ctx, sub, term.role))
    batch.token_stats = dict(sub.token_stats)
    batch.state = ctx.state.term_states.get(term.role)  # updated by the estimator
    return batch


def with_advantages(ctx: AdvantageContext, rows: Rows) -> Rows:
    """New rows with every term's ``advantages`` (and, under DAPO's filter, a mask without the
    all-equal groups) and its estimator's outputs in ``estimator_outputs``. Roles that form one group (the
    rollout kind's ``joint_roles``) are estimated together: a term's estimator sees the rows of
    all of them and writes its own role's rows."""
    method, metrics = ctx.method, ctx.metrics
    advantages = torch.zeros_like(rows.response_mask)
    mask = rows.response_mask.clone()
    outputs: dict[str, torch.Tensor] = {}  # estimators' per-token tensors for their losses
    roles, grouped_with = rows.roles(), joint_roles(method)
    for term in method.terms:
        sel = [b for b, r in enumerate(roles) if r in grouped_with[term.role]]
        sub = rows.select(sel)
        batch = _estimator_batch(ctx, term, sub)
        entry = ADVANTAGE_ESTIMATORS.get(term.advantage)
        adv = entry.fn(batch, entry.make_params(term.advantage_params))
        if hasattr(batch.state, "metrics"):
            metrics.update({f"{term.role}/{k}": v for k, v in batch.state.metrics().items()})
        term_mask = sub.response_mask
        if is_group_relative(term.estimator_meta):
            keep = dapo_group_filter(sub.rewards, sub.groups())
            metrics[f"{term.role}/zero_adv_group_share"] = 1.0 - keep.float().mean().item()
            if method.filter_groups:
                term_mask = term_mask * keep.unsqueeze(-1).float()
                metrics["filter/kept_fraction"] = keep.float().mean().item()
        own = torch.tensor([j for j, b in enumerate(sel) if roles[b] == term.role], dtype=torch.long)
        adv, term_mask = adv[own], term_mask[own]
        metrics[f"{term.role}/advantage_abs_mean"] = masked_mean(adv.abs(), term_mask).item()
        idx = torch.tensor(sel, dtype=torch.long)[own]
        advantages[idx] = adv.to(advantages.dtype)
        mask[idx] = term_mask
        for name, value in batch.outputs.items():
            outputs.setdefault(name, torch.zeros_like(rows.response_mask))[idx] = value[own].float()
    return rows.replace(advantages=advantages, response_mask=mask,
                        estimator_outputs={**rows.estimator_outputs, **outputs})
