"""skpo.rollout: the engine protocol, the Hugging Face engine, Monte Carlo continuations."""

from skpo.rollout.engine import (
    Completion,
    DecodeFn,
    Engine,
    FinishReason,
    SamplingParams,
    ScoringEngine,
    mix_seed,
    prompt_seeds,
)
from skpo.rollout.hf_engine import HFEngine, left_pad, sample_from_logits
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
    "Completion",
    "DecodeFn",
    "Engine",
    "FinishReason",
    "HFEngine",
    "RewardFn",
    "SamplingParams",
    "ScoringEngine",
    "StepValues",
    "left_pad",
    "mc_values",
    "mc_values_batch",
    "mix_seed",
    "prompt_seeds",
    "sample_from_logits",
    "step_boundaries",
    "token_step_index",
    "vineppo_values",
    "vineppo_values_batch",
]
