"""Prompt sampling in a run: the step's prompts (and group sizes) from the method's prompt
sampler, and the pool-scoring rollouts a sampler may ask for before it plans (MMR1 VAS).

The sampler (:mod:`skpo.algorithms.prompt_samplers`) is replicated: every rank plans the same global
batch from the same state, then rolls out its contiguous shard of it — a prompt's answers, however
many the sampler gives it, stay on one rank. Scoring rollouts are sharded the same way, their
verdicts gathered so every rank updates its copy of the sampler identically, and their tokens
counted in the step's ``tokens/decoded`` (the rollout budget pays for them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from skpo.algorithms import PlanRequest, PromptSampler, ValueTracker
from skpo.engines import SamplingParams, mix_seed
from skpo.rollout import ScoreFn
from skpo.tasks.sources import PromptItem

__all__ = ["StepPrompts", "plan_prompts", "score_pool", "scoring_params"]


@dataclass
class StepPrompts:
    """The global batch of one step: ``items`` ``[B']``, their ``group_sizes`` (``None``: the
    method's ``G`` each) and the sampler's metrics."""

    items: list[PromptItem]
    group_sizes: list[int] | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def plan_prompts(sampler: PromptSampler, pool: list[PromptItem], num_prompts: int, group_size: int, seed: int,
                 step: int, draw: int = 0, value_tracker: ValueTracker | None = None) -> StepPrompts:
    """The prompts of ``step`` (``draw`` ≥ 1: DAPO's further rounds): a function of the seed, the
    step, the draw and the sampler's (and value tracker's) state only."""
    generator = torch.Generator().manual_seed(mix_seed(seed, step, 17, *([draw] if draw else [])))
    plan = sampler.plan(PlanRequest([it.key for it in pool], num_prompts, group_size, step, generator, draw, seed,
                                    value_tracker))
    return StepPrompts([pool[i] for i in plan.indices], plan.group_sizes, dict(plan.metrics))


def score_pool(sampler: PromptSampler, step: int, *, engine: Any, pool: list[PromptItem], params: SamplingParams,
               score: ScoreFn, dist: Any,
               timer: Any) -> tuple[int, dict[str, float]]:
    """Run the scoring rollouts ``sampler`` asks for before ``step`` (none: ``(0, {})``): its
    ``scoring_due(step)`` answers for every pool prompt, each rank its shard; the verdicts of all
    ranks go to ``sampler.observe_scoring``. Returns ``(decoded tokens over all ranks, metrics)``.
    The answers' generation is timed as ``rollout`` and their verification as ``scoring``."""
    n = sampler.scoring_due(step)
    if not n:
        return 0, {}
    mine = dist.shard(pool)
    with timer("rollout"):
        outs = engine.generate([list(it.prompt_ids) for it in mine], n, params) if mine else []
        with timer("scoring"):
            correct = score([it for it, comps in zip(mine, outs) for _ in comps],
                            [list(c.token_ids) for comps in outs for c in comps]).correct if mine else []
    per_prompt, start = [], 0
    for comps in outs:
        per_prompt.append([bool(c) for c in correct[start : start + len(comps)]])
        start += len(comps)
    verdicts = [c for part in dist.all_gather_object(per_prompt) for c in part]
    sampler.observe_scoring([it.key for it in pool], verdicts, step)
    decoded = dist.sum_int(sum(len(c.token_ids) for comps in outs for c in comps))
    prefill = dist.sum_int(sum(len(it.prompt_ids) for it in mine))
    answers = sum(len(v) for v in verdicts)
    return decoded, {
        "sampler/scoring_decoded_tokens": float(decoded), "sampler/scoring_prefill_tokens": float(prefill),
        "sampler/scoring_answers": float(answers),
        "sampler/pool_accuracy": sum(sum(v) for v in verdicts) / max(1, answers),
    }


def scoring_params(params: SamplingParams, seed: int, step: int, rank: int) -> SamplingParams:
    """The step's sampling settings with the scoring rollouts' own seed (per rank)."""
    return dataclasses.replace(params, seed=mix_seed(seed, step, 61, rank))
