"""Rollout kinds: how a step turns prompts into scored rows — registered like estimators.

Every kind is a function ``fn(ctx: RolloutContext, items) -> RolloutResult`` registered in
``ROLLOUTS`` with its parameter dataclass (``rollout_params`` of a method document) and
metadata the trainer and the method validation read:

================  ===================================================================================
``roles``         the row roles it produces (a method has one loss term per role)
``group_size``    a fixed number of answers per prompt (``single``: 1), else the method's
``provides``      per-row inputs it attaches for estimators: ``"segment_index"``, ``"step_values"``
``length_tracker``  it reads a per-prompt length tracker and returns ``length_observations``
``joint_roles``   roles whose rows form one group: a term's group-relative estimator sees the
                  rows of all of them (it writes its own role's advantages), and their terms
                  share the aggregation denominators, so the terms add up to one loss over the
                  joint group (Critique-GRPO: answers and refinements)
``variable_group_size``  it takes a number of answers per prompt (``RolloutContext.group_sizes``),
                  so an allocating prompt sampler (Knapsack RL) may be used with it
``prompt_growth`` ``fn(params, max_new_tokens, initial_length) -> int``: the most tokens the kind puts
                  in front of an answer besides the prompt (SKPO's segment ``s``), which sizes the
                  engine's context (:func:`context_plan`); absent: not bounded in advance (prompts
                  that quote generated text), and the engine gets the model's whole context
================  ===================================================================================

Shipped kinds: ``group`` (G answers per prompt; DAPO's dynamic sampling draws more rounds of
prompts when ``filter_groups``), ``single`` (one answer per prompt, SPO), ``mc_steps`` (``group`` +
VinePPO step values from ``k`` continuations at each of the first ``max_steps`` step
boundaries), ``skpo`` (the two-phase rollout, :mod:`skpo.rollout.skpo_rollout`),
``critique_refine`` (Critique-GRPO's answers, critiques and refinements,
:mod:`skpo.training.critique_rollout`), ``scaffold`` (``group`` + Scaf-GRPO's hinted answer for
groups that all failed, :mod:`skpo.training.scaffold`). A new kind is a
function and a ``@ROLLOUTS.register(...)`` line; ``tests/test_method_plugins.py`` adds one from a
test file.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from skpo.algorithms import LengthTracker, MethodPreset
from skpo.algorithms.advantages import TRAINER_INPUTS
from skpo.algorithms.registry import Registry
from skpo.rollout import BatchedReward, SamplingParams, mix_seed, vineppo_values_batch
from skpo.rollout.context import ContextPlan, model_positions, plan_context
from skpo.rollout.engine import Engine, prompt_seeds
from skpo.rollout.skpo_rollout import SkpoPrompt, SkpoRolloutConfig, skpo_rollout
from skpo.tasks.sources import PromptItem, PromptSource
from skpo.training.rows import Rows, concat_rows, pad_responses

__all__ = ["ROLLOUTS", "RolloutContext", "RolloutResult", "SkpoRolloutParams", "MCStepsParams", "Timer", "context_plan"]


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
        method: the resolved method; ``rollout_params`` its kind's parameter record.
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
            ``None``: ``method.group_size`` each. Kinds with ``variable_group_size`` read it.
    """

    engine: Engine
    params: SamplingParams
    method: MethodPreset
    rollout_params: Any
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


# ----------------------------------------------------------------------------- group / single


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


def _sample_groups(ctx: RolloutContext, items: list[PromptItem]) -> tuple[list[dict], list[bool], int, int, int]:
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
    rounds)``; each group is a dict with ``item``, ``responses``, ``logprobs``, ``rewards``,
    ``correct``, ``informative`` and ``kept`` (and, when a kind adds it, ``prompts``: each
    answer's conditioning input, default the item's prompt)."""
    method, params = ctx.method, ctx.params
    target = ctx.num_prompts if ctx.num_prompts is not None else len(items)
    rounds = method.max_gen_batches if method.filter_groups else 1
    groups: list[dict] = []
    all_correct: list[bool] = []
    decoded = prefill = n_kept = 0
    for attempt in range(rounds):
        if attempt:
            items = ctx.sample_prompts(attempt)
            params = dataclasses.replace(params, seed=mix_seed(int(params.seed), 57, attempt))
        prompts = [list(it.prompt_ids) for it in items]
        if attempt == 0 and ctx.group_sizes is not None:
            outs = generate_groups(ctx.engine, prompts, list(ctx.group_sizes), params)
        else:
            outs = ctx.engine.generate(prompts, method.group_size, params)
        prefill += sum(len(p) for p, comps in zip(prompts, outs) if comps)
        with ctx.timer("scoring"):  # every answer of the round in one batch
            flat_rewards, flat_correct = ctx.score(
                [it for it, comps in zip(items, outs) for _ in comps], [list(c.token_ids) for comps in outs for c in comps]
            )
        all_correct += flat_correct
        round_groups = []
        start = 0
        for it, completions in zip(items, outs):  # groups may differ in size: walk the flat scores
            rewards = flat_rewards[start : start + len(completions)]
            correct = flat_correct[start : start + len(completions)]
            start += len(completions)
            decoded += sum(len(comp.token_ids) for comp in completions)
            round_groups.append({"item": it, "responses": [list(c.token_ids) for c in completions],
                                 "logprobs": [list(c.logprobs) for c in completions], "rewards": rewards,
                                 "correct": correct, "informative": len(set(rewards)) > 1})
        # keep decisions in global draw order (this rank's groups sit at ``offset`` in it)
        flags = ctx.all_gather([grp["informative"] for grp in round_groups])
        offset = sum(len(f) for f in flags[: ctx.rank])
        for position, informative in enumerate(f for rank_flags in flags for f in rank_flags):
            keep = (informative or not method.filter_groups) and n_kept < target
            n_kept += keep
            if offset <= position < offset + len(round_groups):
                round_groups[position - offset]["kept"] = keep
        groups += round_groups
        if n_kept >= target:
            break
    return groups, all_correct, decoded, prefill, attempt + 1


GroupsHook = Callable[[RolloutContext, list[dict]], tuple[int, int, dict[str, float]]]


def _group_rows(ctx: RolloutContext, items: list[PromptItem], hook: GroupsHook | None = None
                ) -> tuple[RolloutResult, list[PromptItem]]:
    """The ``group`` rollout's rows. ``hook(ctx, kept groups)`` may change the kept groups in
    place before they become rows (Scaf-GRPO's hinted answers) and returns the tokens it decoded
    and prefilled and its metrics."""
    groups, all_correct, decoded, prefill, batches = _sample_groups(ctx, items)
    kept = [grp for grp in groups if grp["kept"]]
    metrics: dict[str, float] = {}
    if ctx.method.filter_groups:
        metrics["filter/gen_batches"] = batches
        metrics["filter/informative_fraction"] = sum(grp["informative"] for grp in groups) / len(groups)
        metrics["filter/underfilled"] = float(len(kept) < len(items))
    if not sum(ctx.all_gather(len(kept))):  # no informative group at all: train on the first draw (the filter masks it)
        kept = groups[: len(items)]
    if hook is not None:
        hook_decoded, hook_prefill, hook_metrics = hook(ctx, kept)
        decoded, prefill = decoded + hook_decoded, prefill + hook_prefill
        metrics.update(hook_metrics)
    prompts = [list(p) for grp in kept for p in grp.get("prompts") or [grp["item"].prompt_ids] * len(grp["responses"])]
    responses = [r for grp in kept for r in grp["responses"]]
    lps = [lp for grp in kept for lp in grp["logprobs"]]
    rewards = [r for grp in kept for r in grp["rewards"]]
    index = [grp["item"].key for grp in kept for _ in grp["responses"]]
    ids, mask, old = pad_responses(responses, lps, ctx.pad_id)
    rows = Rows(prompts, ids, mask, old, torch.tensor(rewards), index, role=["response"] * len(prompts))
    metrics["tokens/prefill"] = prefill  # one shared prefill per prompt
    metrics["reward/mean"] = float(torch.tensor(rewards).mean())
    # accuracy of everything sampled (the policy's), not of the groups kept for training
    metrics["accuracy/mean"] = float(torch.tensor(all_correct, dtype=torch.float32).mean())
    metrics["response_length/mean"] = float(mask.sum(-1).mean())
    return RolloutResult(rows, metrics, decoded, prefill), [grp["item"] for grp in kept]


def _no_growth(params: Any, max_new_tokens: int, initial_length: float) -> int:
    """Answers follow the prompt itself (Monte Carlo continuations too: a prefix of the answer
    plus the rest of its budget)."""
    return 0


@ROLLOUTS.register("group", roles=("response",), variable_group_size=True, prompt_growth=_no_growth)
def group_rollout(ctx: RolloutContext, items: list[PromptItem]) -> RolloutResult:
    """G answers per prompt from ``q`` (DAPO's refill when the method filters groups)."""
    return _group_rows(ctx, items)[0]


ROLLOUTS.register("single", roles=("response",), group_size=1, prompt_growth=_no_growth)(group_rollout)


@dataclass(frozen=True)
class MCStepsParams:
    k: int = 4  # continuations per step boundary
    max_steps: int = 8  # step boundaries valued per response

    def __post_init__(self) -> None:
        if self.k < 1 or self.max_steps < 1:
            raise ValueError(f"k and max_steps must be >= 1 (got {self.k}, {self.max_steps})")


@ROLLOUTS.register("mc_steps", MCStepsParams, roles=("response",), provides=("step_values",), variable_group_size=True,
                   prompt_growth=_no_growth)
def mc_steps_rollout(ctx: RolloutContext, items: list[PromptItem]) -> RolloutResult:
    """``group`` plus VinePPO step values: ``k`` continuations from each step boundary."""
    result, kept_items = _group_rows(ctx, items)
    rows = result.rows
    by_prompt = {tuple(it.prompt_ids): it for it in kept_items}
    responses = [rows.response_ids[b, : int(n)].tolist() for b, n in enumerate(rows.lengths())]

    def mc_rewards(calls: list[tuple[list[int], list[int]]]) -> list[float]:
        return ctx.score([by_prompt[tuple(p)] for p, _ in calls], [list(r) for _, r in calls])[0]

    p = ctx.rollout_params
    engine = _CountingEngine(ctx.engine)  # continuations count toward the step's decoded tokens
    with ctx.timer("mc_values"):
        values = vineppo_values_batch(
            engine, rows.prompt_ids, responses, set(ctx.source.step_boundary_ids()), p.k,
            dataclasses.replace(ctx.params, seed=mix_seed(int(ctx.params.seed), 99)), BatchedReward(mc_rewards),
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
    return dataclasses.replace(result, rows=rows.replace(extra=extra), decoded_tokens=result.decoded_tokens + engine.decoded)


class _CountingEngine:
    """An engine that counts the tokens it decodes (what a rollout spends on continuations)."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.decoded = engine, 0

    def generate(self, prompts, n, params, max_new_tokens=None):
        out = self.engine.generate(prompts, n, params, max_new_tokens=max_new_tokens)
        self.decoded += sum(len(c.token_ids) for row in out for c in row)
        return out


# ----------------------------------------------------------------------------- skpo


@dataclass(frozen=True)
class SkpoRolloutParams:
    """SKPO's rollout switches (the paper's defaults; Table 2's ablations are switches).

    ``skip`` (❶ False: continual ``q + s``), ``upstream_reward`` (❷ ``own``), ``split`` (❸
    ``fixed``), ``selection`` (❹ ``extreme``; ``first`` = the one-segment variant),
    ``num_segments`` (segments in parallel, ``None`` = group size), ``split_low`` /
    ``split_high`` (``t_q ~ U[L·low, L·high]``, 1/6 and 1/2)."""

    skip: bool = True
    upstream_reward: Literal["mc", "own"] = "mc"
    split: Literal["uniform", "fixed"] = "uniform"
    selection: Literal["median", "extreme", "first"] = "median"
    num_segments: int | None = None
    split_low: float = 1 / 6
    split_high: float = 1 / 2

    def __post_init__(self) -> None:
        if not 0 < self.split_low <= self.split_high <= 1:
            raise ValueError(f"need 0 < split_low <= split_high <= 1 (got {self.split_low}, {self.split_high})")
        SkpoRolloutConfig(skip=self.skip, upstream_reward=self.upstream_reward, split=self.split,
                          selection=self.selection, num_segments=self.num_segments)  # its own checks


def skpo_prompt_growth(params: SkpoRolloutParams, max_new_tokens: int, initial_length: float) -> int:
    """The longest segment ``s`` in front of ``q``: the split point ``t_q <= ⌊split_high · L⌋``,
    capped at the answer budget, where ``L`` (the tracked mean length) starts at
    ``initial_length`` and moves towards observed lengths — at most the answer budget, or twice
    it in the continual ablation (``|s| + mean |o|``)."""
    longest = max(initial_length, max_new_tokens if params.skip else 2 * max_new_tokens)
    return min(max_new_tokens, math.floor(params.split_high * longest))


@ROLLOUTS.register("skpo", SkpoRolloutParams, roles=("upstream", "downstream"), provides=("segment_index",),
                   length_tracker=True, prompt_growth=skpo_prompt_growth,
                   growth_note="the skip segment s (rollout.skpo.split_high × L, L from rollout.skpo.initial_length)")
def skpo_rollout_kind(ctx: RolloutContext, items: list[PromptItem]) -> RolloutResult:
    """SKPO's two phases: G segments from ``q`` (median-NLL one kept), G answers from ``[s, q]``;
    the upstream row's reward is the mean of its G answers' rewards."""
    p = ctx.rollout_params
    rcfg = SkpoRolloutConfig(group_size=ctx.method.group_size, num_segments=p.num_segments, skip=p.skip,
                             upstream_reward=p.upstream_reward, split=p.split, selection=p.selection)
    correct_log: list[bool] = []

    def score_answers(calls: list[tuple[int, list[int]]]) -> list[float]:
        with ctx.timer("scoring"):
            rewards, correct = ctx.score([items[i] for i, _ in calls], [list(a) for _, a in calls])
        correct_log.extend(correct)
        return rewards

    batch = skpo_rollout(
        ctx.engine, [SkpoPrompt(it.key, it.prompt_ids, it.head) for it in items], ctx.length_tracker, ctx.params,
        BatchedReward(score_answers), ctx.generator, rcfg, step=ctx.step, pad_token_id=ctx.pad_id,
    )
    up, down = batch.upstream, batch.downstream
    upstream = Rows(up.prompt_ids, up.response_ids, up.response_mask.float(), up.old_log_probs.float(),
                    up.rewards.float(), list(up.index))
    downstream = Rows(down.prompt_ids, down.response_ids, down.response_mask.float(), down.old_log_probs.float(),
                      down.rewards.float(), list(down.index), list(down.segment_index))
    c = batch.counters
    n_down = len(down.rewards)  # the downstream answers are scored first, then any own completions
    metrics = {
        "upstream/reward": up.rewards.float().mean().item(),
        "upstream/segment_length": up.response_mask.float().sum(-1).mean().item(),
        "upstream/cut_early": c.num_cut_early / max(1, len(items) * rcfg.segments),
        "upstream/split_point": up.split_points.float().mean().item(),
        "downstream/reward": down.rewards.float().mean().item(),
        "downstream/accuracy": sum(correct_log[:n_down]) / max(1, n_down),
        "response_length/mean": down.response_mask.float().sum(-1).mean().item(),
        "tokens/prefill": c.prefill_tokens,
    }
    metrics["accuracy/mean"] = metrics["downstream/accuracy"]
    metrics["reward/mean"] = metrics["downstream/reward"]
    rows = concat_rows([upstream, downstream], ctx.pad_id, roles=["upstream", "downstream"])
    return RolloutResult(rows, metrics, c.decoded_tokens, c.prefill_tokens,
                         (list(up.index), up.length_observations.tolist()))


def rollout_params(method: MethodPreset) -> Any:
    """The parameter record of ``method``'s rollout kind (validated)."""
    return ROLLOUTS.get(method.rollout).make_params(dict(method.rollout_params))


def context_plan(cfg: Any, method: MethodPreset, source: PromptSource, model_config: Any) -> ContextPlan:
    """The engine's context for a run (:func:`skpo.rollout.context.plan_context`): the longest
    training prompt, the rollout kind's ``prompt_growth`` and ``rollout.max_new_tokens``,
    against the model's positions, or ``rollout.max_context_tokens`` when set.

    Raises:
        ContextError: the run does not fit the model; the message names the settings to change.
    """
    entry = ROLLOUTS.get(method.rollout)
    growth_fn = entry.meta.get("prompt_growth")
    budget = cfg.rollout.max_new_tokens
    growth = None if growth_fn is None else int(growth_fn(rollout_params(method), budget, cfg.rollout.skpo.initial_length))
    longest = max((len(item.prompt_ids) for item in source.items), default=1)
    return plan_context(longest, growth, budget, model_positions(model_config), cfg.rollout.context_setting,
                        growth_note=entry.meta.get("growth_note", f"rollout {method.rollout!r} growth"))


def joint_roles(method: MethodPreset) -> dict[str, tuple[str, ...]]:
    """Role → the roles whose rows form one group with it (the rollout kind's ``joint_roles``);
    a role outside them is a group of its own."""
    joint = tuple(ROLLOUTS.get(method.rollout).meta.get("joint_roles", ()))
    return {role: joint if role in joint else (role,) for role in method.roles}


def check_method_against_rollout(method: MethodPreset) -> None:
    """The checks that need the rollout kind: parameters, roles, fixed group size, and that
    it provides every input the method's estimators need."""
    try:
        entry = ROLLOUTS.get(method.rollout)
    except KeyError as err:
        raise ValueError(f"{method.name}: {err.args[0]}") from None
    try:
        params = entry.make_params(dict(method.rollout_params))
        if hasattr(params, "check_method"):  # checks of a kind's parameters that need the method (group size)
            params.check_method(method)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{method.name}: rollout_params: {err}") from None
    produced = tuple(entry.meta.get("roles", ("response",)))
    if set(method.roles) != set(produced):
        raise ValueError(f"{method.name}: rollout {method.rollout!r} produces roles {list(produced)}, "
                         f"so the method needs one term for each (it has {list(method.roles)})")
    fixed = entry.meta.get("group_size")
    if fixed is not None and method.group_size != fixed:
        raise ValueError(f"{method.name}: rollout {method.rollout!r} takes group_size {fixed} (got {method.group_size})")
    from skpo.algorithms import PROMPT_SAMPLERS

    if PROMPT_SAMPLERS.get(method.prompt_sampling).meta.get("allocates") and not entry.meta.get("variable_group_size"):
        raise ValueError(f"{method.name}: {method.prompt_sampling} prompt sampling gives each prompt its own number of "
                         f"answers, which rollout {method.rollout!r} does not take (kinds that do: "
                         f"{[n for n in ROLLOUTS.names() if ROLLOUTS.get(n).meta.get('variable_group_size')]})")
    provided = set(entry.meta.get("provides", ())) | ({"token_weights"} if method.token_weights else set())
    provided |= set(TRAINER_INPUTS)  # the trainer attaches these whatever the rollout kind
    if method.reward_model is not None:  # a trained reward model provides its outputs (skpo.training.reward_models)
        from skpo.training.reward_models import check_reward_model

        provided |= check_reward_model(method)
    for term in method.terms:
        missing = set(term.estimator_meta.get("needs", ())) - provided
        if missing:
            raise ValueError(f"{method.name}: estimator {term.advantage!r} needs {sorted(missing)}, which rollout "
                             f"{method.rollout!r} does not provide")
    if entry.meta.get("length_tracker") and not method.length_tracker:
        raise ValueError(f"{method.name}: rollout {method.rollout!r} needs a length tracker: set length_tracker: true")
    joint = [t for t in method.terms if t.role in entry.meta.get("joint_roles", ())]
    for term in joint[1:]:  # one group: one estimator and one aggregation over it
        for key in ("advantage", "advantage_params", "agg"):
            if getattr(term, key) != getattr(joint[0], key):
                raise ValueError(f"{method.name}: terms.{term.role}.{key}: roles {[t.role for t in joint]} form one group "
                                 f"(rollout {method.rollout!r}), so their terms need the same {key} "
                                 f"({getattr(term, key)!r} vs {getattr(joint[0], key)!r})")


from skpo.training import critique_rollout  # noqa: E402,F401  (registers ``critique_refine``)
from skpo.training import scaffold  # noqa: E402,F401  (registers ``scaffold``, Scaf-GRPO)
