"""skpo.rollout: the engine protocol, the Hugging Face engine, Monte Carlo continuations."""

from skpo.rollout.engine import (
    BatchedReward,
    Completion,
    DecodeFn,
    Engine,
    FinishReason,
    SamplingParams,
    ScoringEngine,
    mix_seed,
    prompt_seeds,
    score_batch,
)
from skpo.rollout.hf_engine import HFEngine, autocast, left_pad, sample_from_logits
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
    "BatchedReward",
    "Completion",
    "DecodeFn",
    "Engine",
    "FinishReason",
    "HFEngine",
    "RewardFn",
    "SamplingParams",
    "ScoringEngine",
    "StepValues",
    "autocast",
    "left_pad",
    "mc_values",
    "mc_values_batch",
    "mix_seed",
    "prompt_seeds",
    "sample_from_logits",
    "score_batch",
    "step_boundaries",
    "token_step_index",
    "vineppo_values",
    "vineppo_values_batch",
]
