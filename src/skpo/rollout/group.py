"""``group`` (G answers per prompt; DAPO's refill when ``filter_groups``) and ``single`` (one
answer per prompt, SPO) rollout kinds, and the grouped sampling other kinds build on."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from skpo.engines.engine import Engine, SamplingParams, call_seed, mix_seed, prompt_seeds
from skpo.rollout.base import ROLLOUTS, RolloutContext, RolloutResult, Verdicts
from skpo.rows import Rows, pad_responses
from skpo.tasks.sources import PromptItem


@dataclasses.dataclass
class SampledGroup:
    """One prompt's sampled answers, scored (``n`` answers; groups may differ in ``n``).

    ``prompts``: each answer's conditioning input when a kind changes it (Scaf-GRPO's hinted
    answer), ``None``: the item's prompt for all. ``kept``: the group trains this step (DAPO's
    refill keeps the first ``prompts_per_step`` informative groups in draw order)."""

    item: PromptItem
    responses: list[list[int]]  # [n] token ids
    logprobs: list[list[float]]  # [n] sampling log-probs
    rewards: list[float]  # [n]
    correct: list[bool]  # [n]
    informative: bool  # rewards not all equal
    kept: bool = False
    prompts: list[list[int]] | None = None

    def answer_prompts(self) -> list[list[int]]:
        """The conditioning input of every answer."""
        return self.prompts or [list(self.item.prompt_ids)] * len(self.responses)


def generate_groups(engine: Engine, prompts: list[list[int]], sizes: list[int], params: SamplingParams) -> list[list]:
    """``sizes[i]`` samples of ``prompts[i]`` (``[B][sizes[i]]`` completions): one engine call per
    distinct size, each prompt with the seed it has in one call over all ``B`` prompts, so its
    samples are the first ``sizes[i]`` of those a uniform call would give it (the engine's seed
    contract: a prompt's samples depend on its prompt seed and the sample index only)."""
    seeds = prompt_seeds(params.seed, len(prompts))
    out: list[list] = [[] for _ in prompts]
    for n in sorted(set(sizes) - {0}):
        idx = [i for i, size in enumerate(sizes) if size == n]
        part = engine.generate([prompts[i] for i in idx], n, dataclasses.replace(params, seed=[seeds[i] for i in idx]))
        for i, completions in zip(idx, part):
            out[i] = completions
    return out


def _sample_groups(ctx: RolloutContext, items: list[PromptItem]
                   ) -> tuple[list[SampledGroup], list[bool], int, int, int, Verdicts]:
    """G answers per prompt, scored. With DAPO's dynamic sampling (``filter_groups``), groups
    whose rewards are all equal carry no gradient, so more prompts are drawn (a fresh batch of
    ``prompts_per_step`` per round, at most ``max_gen_batches`` rounds) until
    ``prompts_per_step`` informative groups are in hand; the first ones in draw order are kept,
    as in verl's DAPO recipe. If the rounds run out first, the step trains on the informative
    groups it has. Under data parallelism each rank samples its shard of every round and the
    decision is global: the informative flags of all ranks are gathered (in draw order) after
    each round, so every rank keeps the groups one process would keep and stops at the same round.

    With ``ctx.group_sizes`` (an allocating prompt sampler) the first round samples that many
    answers per prompt (:func:`generate_groups`).

    Returns ``(groups, correct of every answer sampled, decoded tokens, prefill tokens,
    rounds, verdicts of every answer sampled)``."""
    params = ctx.params
    target = ctx.num_prompts if ctx.num_prompts is not None else len(items)
    rounds = ctx.max_gen_batches if ctx.filter_groups else 1
    groups: list[SampledGroup] = []
    all_correct: list[bool] = []
    verdicts: Verdicts = {}
    decoded = prefill = n_kept = 0
    for attempt in range(rounds):
        if attempt:
            items = ctx.sample_prompts(attempt)
            params = dataclasses.replace(params, seed=mix_seed(call_seed(params), 57, attempt))
        prompts = [list(it.prompt_ids) for it in items]
        if attempt == 0 and ctx.group_sizes is not None:
            outs = generate_groups(ctx.engine, prompts, list(ctx.group_sizes), params)
        else:
            outs = ctx.engine.generate(prompts, ctx.group_size, params)
        prefill += sum(len(p) for p, comps in zip(prompts, outs) if comps)
        with ctx.timer("scoring"):  # every answer of the round in one batch
            scores = ctx.score(
                [it for it, comps in zip(items, outs) for _ in comps], [list(c.token_ids) for comps in outs for c in comps]
            )
        flat_rewards, flat_correct = scores.rewards, scores.correct
        all_correct += flat_correct
        verdicts.update(scores.verdicts)
        round_groups = []
        start = 0
        for it, completions in zip(items, outs):  # groups may differ in size: walk the flat scores
            rewards = flat_rewards[start : start + len(completions)]
            correct = flat_correct[start : start + len(completions)]
            start += len(completions)
            decoded += sum(len(comp.token_ids) for comp in completions)
            round_groups.append(SampledGroup(it, [list(c.token_ids) for c in completions],
                                             [list(c.logprobs) for c in completions], rewards, correct,
                                             informative=len(set(rewards)) > 1))
        # keep decisions in global draw order (this rank's groups sit at ``offset`` in it)
        flags = ctx.all_gather([grp.informative for grp in round_groups])
        offset = sum(len(f) for f in flags[: ctx.rank])
        for position, informative in enumerate(f for rank_flags in flags for f in rank_flags):
            keep = (informative or not ctx.filter_groups) and n_kept < target
            n_kept += keep
            if offset <= position < offset + len(round_groups):
                round_groups[position - offset].kept = keep
        groups += round_groups
        if n_kept >= target:
            break
    return groups, all_correct, decoded, prefill, attempt + 1, verdicts


GroupsHook = Callable[[RolloutContext, list[SampledGroup]], tuple[int, int, dict[str, float], Verdicts]]


def group_rows(ctx: RolloutContext, items: list[PromptItem], hook: GroupsHook | None = None
                ) -> tuple[RolloutResult, list[PromptItem]]:
    """The ``group`` rollout's rows. ``hook(ctx, kept groups)`` may change the kept groups in
    place before they become rows (Scaf-GRPO's hinted answers) and returns the tokens it decoded
    and prefilled, its metrics and the verdicts of the answers it scored."""
    groups, all_correct, decoded, prefill, batches, verdicts = _sample_groups(ctx, items)
    kept = [grp for grp in groups if grp.kept]
    metrics: dict[str, float] = {}
    if ctx.filter_groups:
        metrics["filter/gen_batches"] = batches
        metrics["filter/informative_fraction"] = sum(grp.informative for grp in groups) / len(groups)
        metrics["filter/underfilled"] = float(len(kept) < len(items))
    if not sum(ctx.all_gather(len(kept))):  # no informative group at all: train on the first draw (the filter masks it)
        kept = groups[: len(items)]
    if hook is not None:
        hook_decoded, hook_prefill, hook_metrics, hook_verdicts = hook(ctx, kept)
        decoded, prefill = decoded + hook_decoded, prefill + hook_prefill
        metrics.update(hook_metrics)
        verdicts.update(hook_verdicts)
    prompts = [list(p) for grp in kept for p in grp.answer_prompts()]
    responses = [r for grp in kept for r in grp.responses]
    lps = [lp for grp in kept for lp in grp.logprobs]
    rewards = [r for grp in kept for r in grp.rewards]
    index = [grp.item.key for grp in kept for _ in grp.responses]
    ids, mask, old = pad_responses(responses, lps, ctx.pad_id)
    rows = Rows(prompts, ids, mask, old, torch.tensor(rewards), index, role=["response"] * len(prompts))
    metrics["tokens/prefill"] = prefill  # one shared prefill per prompt
    metrics["reward/mean"] = float(torch.tensor(rewards).mean())
    # accuracy of everything sampled (the policy's), not of the groups kept for training
    metrics["accuracy/mean"] = float(torch.tensor(all_correct, dtype=torch.float32).mean())
    metrics["response_length/mean"] = float(mask.sum(-1).mean())
    return RolloutResult(rows, metrics, decoded, prefill, verdicts=verdicts), [grp.item for grp in kept]


def no_growth(params: Any, max_new_tokens: int, initial_length: float) -> int:
    """Answers follow the prompt itself (Monte Carlo continuations too: a prefix of the answer
    plus the rest of its budget)."""
    return 0


@ROLLOUTS.register("group", roles=("response",), variable_group_size=True, prompt_growth=no_growth)
def group_rollout(ctx: RolloutContext, items: list[PromptItem]) -> RolloutResult:
    """G answers per prompt from ``q`` (DAPO's refill when the method filters groups)."""
    return group_rows(ctx, items)[0]


ROLLOUTS.register("single", roles=("response",), group_size=1, prompt_growth=no_growth)(group_rollout)
