"""``mc_steps`` rollout kind: ``group`` plus VinePPO step values from ``k`` continuations at each
of the first ``max_steps`` step boundaries of every answer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from skpo.engines.engine import BatchedReward, Engine, call_seed, mix_seed
from skpo.rollout.base import ROLLOUTS, RolloutContext, RolloutResult
from skpo.rollout.group import group_rows, no_growth
from skpo.rollout.montecarlo import vineppo_values_batch
from skpo.tasks.sources import PromptItem


@dataclass(frozen=True)
class MCStepsParams:
    k: int = 4  # continuations per step boundary
    max_steps: int = 8  # step boundaries valued per response

    def __post_init__(self) -> None:
        if self.k < 1 or self.max_steps < 1:
            raise ValueError(f"k and max_steps must be >= 1 (got {self.k}, {self.max_steps})")


@ROLLOUTS.register("mc_steps", MCStepsParams, roles=("response",), provides=("step_values",), variable_group_size=True,
                   prompt_growth=no_growth)
def mc_steps_rollout(ctx: RolloutContext, items: list[PromptItem]) -> RolloutResult:
    """``group`` plus VinePPO step values: ``k`` continuations from each step boundary."""
    result, kept_items = group_rows(ctx, items)
    rows = result.rows
    by_prompt = {tuple(it.prompt_ids): it for it in kept_items}
    responses = [rows.response_ids[b, : int(n)].tolist() for b, n in enumerate(rows.lengths())]

    verdicts = dict(result.verdicts)  # the continuations' verdicts join the answers'

    def mc_rewards(calls: list[tuple[list[int], list[int]]]) -> list[float]:
        scores = ctx.score([by_prompt[tuple(p)] for p, _ in calls], [list(r) for _, r in calls])
        verdicts.update(scores.verdicts)
        return scores.rewards

    p = ctx.rollout_params
    engine = _CountingEngine(ctx.engine)  # continuations count toward the step's decoded tokens
    with ctx.timer("mc_values"):
        values = vineppo_values_batch(
            engine, rows.prompt_ids, responses, set(ctx.source.step_boundary_ids()), p.k,
            dataclasses.replace(ctx.params, seed=mix_seed(call_seed(ctx.params), 99)), BatchedReward(mc_rewards),
            max_steps=p.max_steps, max_response_tokens=ctx.max_new_tokens, terminal_rewards=rows.rewards.tolist(),
        )
    s = max([v.num_steps for v in values] + [1])
    step_values = torch.zeros(len(values), s)
    step_mask = torch.zeros(len(values), s)
    token_step = torch.zeros_like(rows.response_ids)
    for b, v in enumerate(values):
        step_values[b, : v.num_steps] = v.values[: v.num_steps]
        step_mask[b, : v.num_steps] = 1
        token_step[b, : len(v.token_step)] = v.token_step
    extra = {**rows.extra, "step_values": step_values, "step_mask": step_mask, "token_step_index": token_step}
    result.metrics["mc/steps_per_response"] = float(step_mask.sum(-1).mean())
    result.metrics["mc/decoded_tokens"] = engine.decoded
    return dataclasses.replace(result, rows=rows.replace(extra=extra), verdicts=verdicts,
                               decoded_tokens=result.decoded_tokens + engine.decoded)


class _CountingEngine:
    """An engine that counts the tokens it decodes (what a rollout spends on continuations)."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.decoded = engine, 0

    def generate(self, prompts, n, params, max_new_tokens=None):
        out = self.engine.generate(prompts, n, params, max_new_tokens=max_new_tokens)
        self.decoded += sum(len(c.token_ids) for row in out for c in row)
        return out
