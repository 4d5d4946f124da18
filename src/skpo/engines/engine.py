"""The rollout engine protocol: sample ``n`` completions per prompt, with per-token log-probs.

Everything above the engine (the SKPO two-phase rollout, Monte Carlo continuations, the
trainer) talks to it through :class:`Engine` and the two records below, so that the
Hugging Face engine (CPU/GPU, :mod:`skpo.engines.hf_engine`) and a vLLM engine are
interchangeable.

Conventions
-----------
- Prompts and completions are plain token-id lists (no tensors, no padding).
- ``generate(prompts, n, params)[i][j]`` is sample ``j`` of prompt ``i``.
- **Shared prefill.** The ``n`` samples of one prompt share one encoding of the prompt: an
  engine prefills the prompt once and reuses its KV cache for all ``n`` rows. This is how
  SKPO continues ``G`` answers from one ``[s, q]`` and how Monte Carlo continuations share
  a prefix. It is a speed property only; results equal those of prefilling ``n`` copies.
- **Sampling log-prob.** ``Completion.logprobs[t]`` is
  ``log_softmax(logits_t / temperature)[token_t]``, taken *before* top-p truncation. That
  is the quantity a trainer recomputes with a teacher-forced forward pass
  (``log π_old``), so importance ratios start at exactly 1 (up to float rounding).
  Top-p changes which tokens can be drawn, not the reported log-prob. With
  ``temperature == 0`` (greedy) the tokens are the argmax and the log-probs are those of
  the untempered model, ``log_softmax(logits)``. An engine that can only report the log-prob
  *after* top-p (renormalised over the nucleus: vLLM's ``processed_logprobs``) says so with
  ``logprobs_after_top_p = True``; the two agree at ``top_p == 1`` (every shipped recipe).
  The trainer recomputes ``log π_old`` itself whenever the update is off-policy.
- **Stop tokens are kept.** When a row stops on a token in ``stop_token_ids`` (e.g. EOS),
  that token is the last entry of ``token_ids`` (with its log-prob). A trainer then trains
  on the EOS decision too, and ``len(token_ids)`` is the number of sampled tokens. When a
  row stops on a stop *string*, ``token_ids`` ends with the token that completed the
  string (the text is not cut inside a token).
- **Seeds.** With the same ``seed`` an engine returns the same samples; see
  :class:`SamplingParams` for how a seed maps to prompts and samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample.

    Attributes:
        temperature: softmax temperature; ``0`` means greedy (argmax), see module docstring.
        top_p: nucleus sampling: draw from the smallest set of most likely tokens whose
            probability mass reaches ``top_p`` (``1.0`` = no truncation).
        max_new_tokens: the most tokens to generate per sample (a per-prompt list passed to
            ``Engine.generate`` overrides it).
        stop_token_ids: generation of a sample stops after it emits one of these (e.g. EOS).
        stop: stop strings; a sample stops once its decoded completion contains one. Needs
            an engine built with a ``decode`` function.
        ignore_eos: keep generating past the engine's EOS token(s) (vLLM's ``ignore_eos``):
            every sample runs to ``max_new_tokens`` unless ``stop_token_ids`` / ``stop``
            end it. For benchmarks that need exactly equal work.
        seed: ``None`` draws a fresh seed from torch's global RNG (reproducible under
            ``torch.manual_seed``). An ``int`` seeds the whole call: prompt ``i`` gets the
            prompt seed ``mix(seed, i)``. A sequence gives one prompt seed per prompt. The
            samples of a prompt depend only on its prompt seed and the sample index ``j`` —
            not on batch size, chunking, prefix sharing, or the other prompts in the call.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop_token_ids: list[int] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    seed: int | Sequence[int] | None = None
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class Completion:
    """One sampled continuation of a prompt.

    Attributes:
        token_ids: generated tokens only (no prompt); ends with the stop token when
            ``finish_reason == "stop"`` because of a stop token id.
        logprobs: ``[len(token_ids)]`` sampling log-probs, ``log_softmax(logits/T)`` of each
            generated token, before top-p truncation.
        finish_reason: ``"stop"`` (a stop token id or stop string) or ``"length"`` (hit the
            row's max new tokens, or the engine's context: then ``cut_by_context``).
        stop_reason: the stop token id or stop string that ended the sample, else ``None``.
        cut_by_context: the sample reached the engine's context before its answer budget
            (:class:`skpo.engines.context.ContextLimit`): an unfinished answer, counted.
    """

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason
    stop_reason: int | str | None = None
    cut_by_context: bool = False

    def __len__(self) -> int:
        return len(self.token_ids)


@runtime_checkable
class Engine(Protocol):
    """What the rollout code needs from an inference engine."""

    def generate(
        self,
        prompts: list[list[int]],
        n: int,
        params: SamplingParams,
        max_new_tokens: list[int] | None = None,
    ) -> list[list[Completion]]:
        """Sample ``n`` completions for each prompt.

        Args:
            prompts: ``B`` prompts as token-id lists (unpadded, any lengths).
            n: samples per prompt; the ``n`` samples of a prompt share its prefill.
            params: sampling settings (see :class:`SamplingParams`).
            max_new_tokens: optional ``[B]`` per-prompt override of
                ``params.max_new_tokens`` (SKPO pauses each prompt at its own split ``t_q``).

        Returns:
            ``[B][n]`` completions; ``out[i][j]`` is sample ``j`` of prompt ``i``.
        """
        ...


@runtime_checkable
class ScoringEngine(Engine, Protocol):
    """An engine that can also teacher-force: log-probs of given completions."""

    def score(
        self,
        prompts: list[list[int]],
        completions: list[list[int]],
        temperature: float = 1.0,
    ) -> list[list[float]]:
        """``out[i][t] = log_softmax(logits/temperature)[completions[i][t]]`` given
        ``prompts[i] + completions[i][:t]`` (one prompt per completion, ``len(prompts) ==
        len(completions)``)."""
        ...


DecodeFn = Callable[[list[int]], str]
"""Turns token ids into text (e.g. ``tokenizer.decode``); used for stop strings."""


_MASK64 = (1 << 64) - 1


def call_seed(params: SamplingParams) -> int:
    """The one seed of a whole call (``params.seed`` as an ``int``), from which a rollout kind
    derives the seeds of its follow-up calls (refill rounds, hints, critiques, continuations) with
    :func:`mix_seed`. The trainer always calls a rollout kind with one integer seed; per-prompt
    seeds or none leave nothing to derive from."""
    if params.seed is None or isinstance(params.seed, Sequence):
        raise ValueError(f"a rollout derives its follow-up calls' seeds from one integer seed (got {params.seed!r})")
    return int(params.seed)


def mix_seed(*values: int) -> int:
    """Deterministic 63-bit hash of integers (splitmix64 chain), for deriving sub-seeds.

    ``mix_seed(seed, i)`` is the prompt seed of prompt ``i`` under call seed ``seed``;
    ``mix_seed(prompt_seed, j)`` seeds sample ``j`` of that prompt. Unlike ``seed + i`` it
    does not make call ``seed`` / prompt ``i + 1`` collide with call ``seed + 1`` / prompt ``i``.
    """
    state = 0x9E3779B97F4A7C15
    for v in values:
        state = (state ^ (int(v) & _MASK64)) & _MASK64
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state >> 1  # torch.Generator.manual_seed accepts < 2**63 cleanly


def prompt_seeds(seed: int | Sequence[int] | None, num_prompts: int) -> list[int]:
    """The per-prompt seeds of a call (see :attr:`SamplingParams.seed`)."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    if isinstance(seed, int):
        return [mix_seed(seed, i) for i in range(num_prompts)]
    seeds = [int(s) for s in seed]
    if len(seeds) != num_prompts:
        raise ValueError(f"got {len(seeds)} seeds for {num_prompts} prompts")
    return seeds


def resolve_max_new_tokens(
    params: SamplingParams, num_prompts: int, max_new_tokens: list[int] | None
) -> list[int]:
    """Per-prompt max new tokens: the override list, else ``params.max_new_tokens``."""
    if max_new_tokens is None:
        return [params.max_new_tokens] * num_prompts
    if len(max_new_tokens) != num_prompts:
        raise ValueError(f"got {len(max_new_tokens)} max_new_tokens for {num_prompts} prompts")
    if any(m < 0 for m in max_new_tokens):
        raise ValueError("max_new_tokens entries must be >= 0")
    return [int(m) for m in max_new_tokens]


def score_batch(reward_fn: Callable[..., float], calls: Sequence[tuple]) -> list[float]:
    """``[reward_fn(*args) for args in calls]``, as one call of ``reward_fn.batch(calls)`` when
    the function has a ``batch`` attribute (a verifier pool then checks the whole batch in
    parallel instead of one completion at a time)."""
    batch = getattr(reward_fn, "batch", None)
    if batch is not None:
        out = [float(r) for r in batch(list(calls))]
        if len(out) != len(calls):
            raise ValueError(f"reward_fn.batch returned {len(out)} rewards for {len(calls)} answers")
        return out
    return [float(reward_fn(*args)) for args in calls]


class BatchedReward:
    """A per-answer reward function backed by a batched one: ``f(*args)`` scores one answer,
    ``f.batch([args, …])`` scores many in one call (see :func:`score_batch`)."""

    def __init__(self, batch: Callable[[list[tuple]], Sequence[float]]) -> None:
        self.batch = batch

    def __call__(self, *args) -> float:
        return float(self.batch([args])[0])


def holds_weights(engine: Any) -> bool:
    """Whether ``engine`` decodes from its own copy of the weights (vLLM): such an engine has
    ``sync_weights(model)``, called after every update, and ``sleep()``, which frees its memory
    for the trainer's passes. The Hugging Face engine decodes with the policy itself."""
    return hasattr(engine, "sync_weights")
