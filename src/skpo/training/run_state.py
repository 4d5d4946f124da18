"""The state a run carries from step to step besides the weights: counters, the per-prompt
trackers (value, length), the prompt sampler's statistics, the estimators' own state, and the
policy drift the trackers' ρ may read — replicated on every rank, saved in every checkpoint."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

from skpo.algorithms import LengthTracker, ValueTracker, build_prompt_sampler, kl_penalty, masked_mean
from skpo.algorithms.advantages import estimator_inputs
from skpo.errors import CheckpointError
from skpo.methods import Method, rollout_params
from skpo.models.forward import length_buckets, no_grad_forward
from skpo.reward_range import to_unit
from skpo.rollout import ROLLOUTS, RolloutResult
from skpo.rows import Rows
from skpo.training.actor import Actor, row_lengths


class RunState:
    def __init__(self, method: Method, rho_mode: str = "kl", initial_length: float = 32.0) -> None:
        """``rho_mode``: the trackers' forgetting (``train.rho_mode``); ``initial_length``: the
        length tracker's prior (``rollout.initial_length``), its split bounds from the rollout
        kind's ``length_tracker`` metadata (a function of its parameter record)."""
        self.method = method
        self.rho_mode = rho_mode
        self.value_tracker = (ValueTracker(reward_range=method.reward_range, rho_mode=self.rho_mode)
                              if method.value_tracker else None)
        declared = ROLLOUTS.get(method.rollout).meta.get("length_tracker")
        bounds = declared(rollout_params(method)) if callable(declared) else {}
        self.length_tracker = (LengthTracker(initial=initial_length, **bounds, rho_mode=self.rho_mode)
                               if method.length_tracker else None)
        # state of stateful estimators (``state`` metadata: RiskPO's quantiles, PAPO's controller), per term
        self.term_states = {t.role: s for t in method.terms if (s := t.make_state()) is not None}
        # which prompts a step trains on and how many answers each gets (skpo.algorithms.prompt_samplers)
        self.prompt_sampler = build_prompt_sampler(method.prompt_sampling, dict(method.prompt_sampling_params))
        self.step = 0
        self.tokens_seen = 0
        self.train_seconds = 0.0
        self.drift = 0.0  # accumulated policy KL (rho_mode="kl")
        self.drift_seen: dict[Hashable, float] = {}

    # ------------------------------------------------------------------ after each step
    def observe(self, rows: Rows, result: RolloutResult, step: int) -> None:
        """The value tracker takes the rewards of the rows whose estimator reads it (else the
        first term's rows); the length tracker the rollout's length observations; the prompt
        sampler the first term's rewards mapped to ``[0, 1]``."""
        terms = self.method.terms
        if self.value_tracker is not None:
            roles = [t.role for t in terms if "baseline" in estimator_inputs(t.estimator_meta)]
            sub = rows.select(rows.rows_of((roles or [terms[0].role])[0]))
            self.value_tracker.update(sub.prompt_keys, sub.rewards.tolist(), kls=self._prompt_kls(sub.prompt_keys), step=step)
        if self.length_tracker is not None and result.length_observations is not None:
            keys, lengths = result.length_observations
            self.length_tracker.update(keys, lengths, kls=self._prompt_kls(keys), step=step)
        first = rows.select(rows.rows_of(terms[0].role))
        self.prompt_sampler.observe(first.prompt_keys, to_unit(first.rewards.double(), self.method.reward_range).tolist(), step)
        for k in rows.prompt_keys:
            self.drift_seen[k] = self.drift

    def _prompt_kls(self, keys) -> list[float] | None:
        if self.rho_mode != "kl":
            return None
        return [self.drift - self.drift_seen.get(k, self.drift) for k in keys]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "tokens_seen": self.tokens_seen,
            "train_seconds": self.train_seconds,
            "drift": self.drift,
            "drift_seen": self.drift_seen,
            "value_tracker": self.value_tracker.state_dict() if self.value_tracker else None,
            "length_tracker": self.length_tracker.state_dict() if self.length_tracker else None,
            "prompt_sampler": self.prompt_sampler.state_dict(),
            "term_states": {role: state.state_dict() for role, state in self.term_states.items()},
        }

    def load_state_dict(self, state: dict[str, Any], path: Path) -> None:
        """Restore from a checkpoint's ``state.json`` (``path`` names it in errors)."""
        self.step = int(state["step"])
        self.tokens_seen = int(state.get("tokens_seen", 0))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.drift = float(state.get("drift", 0.0))
        self.drift_seen = dict(state.get("drift_seen", {}))
        if self.value_tracker is not None:
            self.value_tracker.load_state_dict(state["value_tracker"])
        if self.length_tracker is not None:
            self.length_tracker.load_state_dict(state["length_tracker"])
        self.prompt_sampler.load_state_dict(state.get("prompt_sampler") or {})
        for role, term_state in self.term_states.items():
            saved_states = state.get("term_states") or {}
            if role not in saved_states:
                raise CheckpointError(f"{path}: no saved state for the {role!r} term's estimator")
            term_state.load_state_dict(saved_states[role])


def measure_drift(actor: Actor, rows: Rows, role: str) -> float:
    """One step's policy drift: k3 KL of the updated policy against the rollout policy on the
    first micro-batch of ``role``'s rows."""
    rows = rows.select(rows.rows_of(role))
    bucket = length_buckets(row_lengths(rows), actor.settings.train.micro_batch_tokens)[0]
    sub = rows.select(bucket)
    new_lp, _ = no_grad_forward(actor.policy, sub, [(range(len(sub)), None)], actor.pad_id, actor.settings.temperature,
                                actor.autocast)
    kl = kl_penalty(sub.old_log_probs, new_lp, "k3")  # KL(π_old ‖ π_new) from π_old samples
    return max(masked_mean(kl, sub.response_mask).item(), 0.0)
