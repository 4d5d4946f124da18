"""The log-prob phase, before any update: the rollout policy's token statistics that plug-ins
declare, π_old recomputed by a trainer forward (off-policy updates) and the reference policy's
log-probs (when a KL term is on). Each role's rows go through the forward on their own."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch

from skpo.algorithms.token_stats import reducer
from skpo.methods import Method
from skpo.rows import Rows
from skpo.training.actor import Actor

if TYPE_CHECKING:
    from peft import PeftModel


def is_on_policy(mini_batches: int, ppo_epochs: int) -> bool:
    """One mini-batch and one epoch: the update runs on the very policy that sampled, so π_old
    is the current policy and the ratio is 1 (gradient −A·∇log π). The old log-probs are then
    the detached log-probs of the update's own forward — no extra pass; verl's actor and TRL's
    GRPOTrainer take the same shortcut."""
    return mini_batches == 1 and ppo_epochs == 1


@torch.no_grad()
def with_old_and_ref_log_probs(actor: Actor, method: Method, rows: Rows) -> Rows:
    """New rows with the token statistics (:func:`with_token_stats`), π_old recomputed when
    ``train.recompute_old_log_probs`` and off-policy, and reference log-probs with a KL term."""
    rows = with_token_stats(actor, method, rows)
    train = actor.settings.train
    recompute = train.recompute_old_log_probs and not is_on_policy(train.mini_batches, train.ppo_epochs)
    wants_ref = actor.ref_model is not None or (actor.lora and method.kl_coef > 0)
    if not recompute and not wants_ref:
        return rows
    old = rows.old_log_probs.clone()
    ref = torch.zeros_like(rows.old_log_probs) if wants_ref else None
    for role in method.roles:
        sel = rows.rows_of(role)
        if not sel:
            continue
        sub, idx = rows.select(sel), torch.tensor(sel, dtype=torch.long)
        if recompute:
            old[idx] = actor.log_probs(actor.policy, sub)
        if ref is not None and actor.lora:  # the frozen base: the policy with its adapters off
            with cast("PeftModel", actor.policy).disable_adapter():
                ref[idx] = actor.log_probs(actor.policy, sub)
        elif ref is not None:
            assert actor.ref_model is not None  # (wants_ref without LoRA: the actor keeps a reference)
            ref[idx] = actor.log_probs(actor.ref_model, sub)
    return rows.replace(old_log_probs=old, ref_log_probs=ref)


def with_token_stats(actor: Actor, method: Method, rows: Rows) -> Rows:
    """New rows with each term's declared token statistics (``token_stats`` metadata,
    :mod:`skpo.algorithms.token_stats`) in ``rows.token_stats[name]`` ``[B, T]``: one
    no-grad forward of the rollout policy (π_old) over each term's rows."""
    requests = {t.role: t.token_stat_requests() for t in method.terms}
    if not any(requests.values()):
        return rows
    stats: dict[str, torch.Tensor] = {}
    for role, wanted in requests.items():
        for name, _ in wanted:  # every key on every rank, rows or not (gathered records need the same statistics)
            stats.setdefault(name, torch.zeros_like(rows.old_log_probs))
        sel = rows.rows_of(role)
        if not wanted or not sel:
            continue
        idx = torch.tensor(sel, dtype=torch.long)
        for name, values in actor.token_stats(rows.select(sel), reducer(wanted)).items():
            stats[name][idx] = values
    return rows.replace(token_stats={**rows.token_stats, **stats})
