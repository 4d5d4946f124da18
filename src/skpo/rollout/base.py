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
from skpo.rows import Rows
from skpo.tasks.sources import PromptItem, PromptSource

__all__ = ["ROLLOUTS", "RolloutContext", "RolloutResult", "ScoreFn", "Timer"]


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


ScoreFn = Callable[[list[PromptItem], list[list[int]]], tuple[list[float], list[bool]]]


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
        score: ``score(items, responses) -> (training rewards, correct)``, one batch.
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
    """

    rows: Rows
    metrics: dict[str, float] = field(default_factory=dict)
    decoded_tokens: int = 0
    prefill_tokens: int = 0
    length_observations: tuple[list[Hashable], list[float]] | None = None


ROLLOUTS: Registry[Callable[[RolloutContext, list[PromptItem]], RolloutResult]] = Registry("rollout kind")
