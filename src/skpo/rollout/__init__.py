"""Rollout kinds: how a step turns prompts into scored rows (one module per kind; importing this
package registers them all in ``ROLLOUTS``), and VinePPO's Monte Carlo continuations."""

from skpo.rollout import critique, group, mc_steps, scaffold, skpo_rollout  # noqa: F401  (register the kinds)
from skpo.rollout.base import ROLLOUTS, RolloutContext, RolloutResult, ScoreFn, Scores, Timer, Verdicts
from skpo.rollout.montecarlo import (
    RewardFn,
    StepValues,
    mc_values,
    mc_values_batch,
    step_boundaries,
    token_step_index,
    vineppo_values,
    vineppo_values_batch,
)

__all__ = [
    "ROLLOUTS",
    "RewardFn",
    "RolloutContext",
    "RolloutResult",
    "ScoreFn",
    "Scores",
    "StepValues",
    "Timer",
    "Verdicts",
    "mc_values",
    "mc_values_batch",
    "step_boundaries",
    "token_step_index",
    "vineppo_values",
    "vineppo_values_batch",
]
