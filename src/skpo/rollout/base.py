"""The rollout-kind contract: how a step turns prompts into scored rows.

A kind is a function ``fn(ctx: RolloutContext, items) -> RolloutResult`` registered in
``ROLLOUTS`` with its parameter dataclass and metadata (``roles``, ``group_size``, ``provides``,
``length_tracker``, ``joint_roles``, ``variable_group_size``, ``prompt_growth``): what each key
means and the shipped kinds are in ``docs/rollout.md``. One module per kind sits beside this one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import torch

from skpo.algorithms import LengthTracker
from skpo.engines.engine import Engine, SamplingParams
from skpo.registry import Registry
from skpo.rewards.base import Verdict
from skpo.rows import Rows
from skpo.tasks.sources import PromptItem, PromptSource

__all__ = ["ROLLOUTS", "RolloutContext", "RolloutResult", "ScoreFn", "Scores", "Timer", "Verdicts"]


class Timer:
    """Accumulated seconds per phase name: ``with timer("rollout"): ...``."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.times[name] = timer.times.get(name, 0.0) + time.perf_counter() - self.t0

        return _Ctx()


Verdicts = dict[tuple[Hashable, tuple[int, ...]], Verdict]
"""What the reward said of each scored answer, by ``(prompt key, response token ids)``."""


@dataclass(frozen=True)
class Scores:
    """One batch of answers scored (:data:`ScoreFn`'s result), in the order they were given.

    Attributes:
        rewards: training rewards, in the method's reward range.
        correct: whether each answer is correct (the verdict's own flag).
        verdicts: the reward's verdict on each answer, by ``(prompt key, response ids)``; a
            kind hands them back in :attr:`RolloutResult.verdicts`.
    """

    rewards: list[float]
    correct: list[bool]
    verdicts: Verdicts = field(default_factory=dict)


ScoreFn = Callable[[list[PromptItem], list[list[int]]], Scores]


@dataclass
class RolloutContext:
    """What a rollout kind may use in one step (built by the trainer).

    Attributes:
        engine: the generation engine; ``params`` this step's sampling settings (seeded).
        rollout_params: the kind's parameter record (``rollout_params`` of the method).
        group_size: answers per prompt (the method's ``group_size``).
        filter_groups: DAPO's dynamic sampling: draw more prompts until ``num_prompts`` groups
            have unequal rewards, at most ``max_gen_batches`` rounds.
        method: the resolved method (:class:`skpo.methods.Method`), for a plug-in kind that
            reads more of it; the shipped kinds read only the fields above.
        score: ``score(items, responses) -> Scores`` (training rewards, correctness and
            verdicts), one batch; a kind returns the verdicts of everything it scored.
        sample_prompts: ``sample_prompts(draw) -> items`` — a further round of this step's
            prompts (``draw`` ≥ 1; DAPO's refill).
        length_tracker: the per-prompt length tracker (kinds with ``length_tracker``).
        source: the prompt source (step boundaries, answer markers).
        generator: this step's torch generator for the kind's own random choices.
        rank: this process's rank (its shard's place in ``all_gather``'s list).
        num_prompts: the step's global number of prompts (``None``: the items given; under
            data parallelism each rank gets a shard of them).
        all_gather: ``all_gather(obj) -> [obj of rank 0, obj of rank 1, …]`` — for decisions
            that need the global batch (DAPO's refill); ``[obj]`` on one process.
        group_sizes: answers per prompt of the items given (an allocating prompt sampler);
            ``None``: ``group_size`` each. Kinds with ``variable_group_size`` read it.
    """

    engine: Engine
    params: SamplingParams
    rollout_params: Any
    group_size: int
    step: int
    score: ScoreFn
    sample_prompts: Callable[[int], list[PromptItem]]
    source: PromptSource
    pad_id: int
    max_new_tokens: int
    timer: Timer
    generator: torch.Generator
    length_tracker: LengthTracker | None = None
    num_prompts: int | None = None
    rank: int = 0
    all_gather: Callable[[Any], list[Any]] = field(default=lambda obj: [obj])
    group_sizes: list[int] | None = None
    filter_groups: bool = False
    max_gen_batches: int = 1
    method: Any = None


@dataclass
class RolloutResult:
    """What every rollout kind returns.

    Attributes:
        rows: one record with the rows of every role (``rows.role``), scored.
        metrics: the kind's own metrics.
        decoded_tokens: every token the engine decoded for this step (kept or not).
        prefill_tokens: prompt tokens encoded (one shared prefill per distinct prompt).
        length_observations: ``(keys, lengths)`` for the length tracker, if the kind keeps one.
        verdicts: the verdicts of every answer the kind scored (the union of its
            :attr:`Scores.verdicts`; an answer scored twice keeps its later verdict): what the
            step's sample records say of each answer.
    """

    rows: Rows
    metrics: dict[str, float] = field(default_factory=dict)
    decoded_tokens: int = 0
    prefill_tokens: int = 0
    length_observations: tuple[list[Hashable], list[float]] | None = None
    verdicts: Verdicts = field(default_factory=dict)


ROLLOUTS: Registry[Callable[[RolloutContext, list[PromptItem]], RolloutResult]] = Registry("rollout kind")
