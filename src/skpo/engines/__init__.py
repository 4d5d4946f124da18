"""Token engines: the engine protocol (``generate`` / ``score``), the Hugging Face engine, the
vLLM engine (imported on use: vLLM is optional) and the context plan that bounds requests."""

from skpo.engines.engine import (
    BatchedReward,
    Completion,
    DecodeFn,
    Engine,
    FinishReason,
    SamplingParams,
    ScoringEngine,
    call_seed,
    holds_weights,
    mix_seed,
    prompt_seeds,
    score_batch,
)
from skpo.engines.hf_engine import HFEngine, autocast, left_pad, sample_from_logits

__all__ = [
    "BatchedReward",
    "Completion",
    "DecodeFn",
    "Engine",
    "FinishReason",
    "HFEngine",
    "SamplingParams",
    "ScoringEngine",
    "autocast",
    "holds_weights",
    "left_pad",
    "call_seed",
    "mix_seed",
    "prompt_seeds",
    "sample_from_logits",
    "score_batch",
]
