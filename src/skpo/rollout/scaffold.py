"""Scaf-GRPO's rollout kind ``scaffold``: in-prompt hints for prompts whose whole group failed.

The whole story (sources, readings, how each step runs): ``docs/methods.md``, section "Notes from skpo.rollout.scaffold"."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from skpo.engines import call_seed, mix_seed
from skpo.rollout.base import ROLLOUTS, RolloutContext, RolloutResult, Verdicts
from skpo.rollout.group import SampledGroup, group_rows
from skpo.tasks.dataset import prompt_messages
from skpo.tasks.prompts import prompt_ids
from skpo.tasks.sources import PromptItem
from skpo.tasks.templates import skip_input_ids

__all__ = ["ScaffoldParams", "hint_prompt_ids", "scaffold_rollout"]


@dataclass(frozen=True)
class ScaffoldParams:
    """Scaf-GRPO's switches (defaults: ``bs256_6k_mix.sh`` and ``build_new_message``)."""

    warmup_steps: int = 50  # no hints before this (0-based) step: the source's global_steps > 50
    levels_per_tier: int = 4  # cumulative hint levels per tier
    hint_columns: Mapping[str, str] = field(default_factory=dict)  # data sets: row key → tier label

    def __post_init__(self) -> None:
        if self.warmup_steps < 0 or self.levels_per_tier < 1:
            raise ValueError(f"need warmup_steps >= 0 and levels_per_tier >= 1 (got {self.warmup_steps}, "
                             f"{self.levels_per_tier})")
        if not isinstance(self.hint_columns, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.hint_columns.items()):
            raise ValueError(f"hint_columns must map row keys to tier labels (got {self.hint_columns!r})")


def _parts(value: Any) -> list[str]:
    """A row's hint parts: a list (or array) of strings; a string is one part; null none."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in list(value)]


def _check_hints(source: Any, item: PromptItem, params: ScaffoldParams) -> None:
    """Refuse an item that can have no hints (named, with the key to set)."""
    if params.hint_columns:
        row = getattr(item.answer, "row", None) or {}
        missing = [c for c in params.hint_columns if c not in row]
        if missing:
            raise ValueError(f"rollout_params.hint_columns: prompt {item.key!r} has no column(s) {missing}")
        if getattr(item.answer, "messages", None) is not None:
            raise ValueError(f"rollout 'scaffold': prompt {item.key!r} is a chat list; hints need a question column")
    elif getattr(item.answer, "arith", None) is None and getattr(item.answer, "countdown", None) is None:
        raise ValueError(f"rollout 'scaffold': prompt {item.key!r} has no hints: set rollout_params.hint_columns "
                         "(row keys holding lists of hint parts → tier labels)")
    if getattr(source, "tokenizer", None) is None:
        raise ValueError("rollout 'scaffold' needs the prompt source's tokenizer (source.tokenizer)")


def hint_prompt_ids(source: Any, item: PromptItem, params: ScaffoldParams) -> list[list[int]]:
    """The prompt ids of every hint level of ``item``, level 1 first (module docstring).

    Arithmetic and countdown (no ``hint_columns``): ``[s_k, q]`` with ``s_k`` the first ``k``
    equation (move) lines of the reference solution, ``k = 1..levels_per_tier`` (past the last line a level repeats the
    full list, as the source repeats a short tier).
    Data sets: per tier, ``"Question: {q}\\n{label}: {parts[:k]}"`` through the run's template.
    """
    tokenizer = source.tokenizer
    levels = range(1, params.levels_per_tier + 1)
    if not params.hint_columns:
        synthetic = item.answer.arith if item.answer.arith is not None else item.answer.countdown
        lines = [step.text for step in (synthetic.steps if item.answer.arith is not None else synthetic.moves)]
        return [skip_input_ids(tokenizer.encode("\n".join(lines[:k]) + "\n", add_special_tokens=False),
                               item.prompt_ids, item.head) for k in levels]
    problem, chat = item.answer, bool(getattr(source, "chat", False))
    out = []
    for column, label in params.hint_columns.items():
        parts = _parts(problem.row[column])
        for k in levels:
            hinted = dataclasses.replace(problem, question=f"Question: {problem.question}\n{label}: {' '.join(parts[:k])}")
            out.append(prompt_ids(tokenizer, prompt_messages(source.spec, hinted, chat), chat=chat))
    return out


def _hint_failed_groups(ctx: RolloutContext, groups: list[SampledGroup]) -> tuple[int, int, dict[str, float], Verdicts]:
    """Steps 2–5 of the module docstring on this rank's kept groups, in place; returns the
    tokens decoded and prefilled, the metrics and the hinted answers' verdicts."""
    params: ScaffoldParams = ctx.rollout_params
    failed = [grp for grp in groups if grp.responses and not any(grp.correct)]
    metrics = {"scaffold/active": float(ctx.step >= params.warmup_steps), "scaffold/all_wrong_groups": float(len(failed))}
    if ctx.step < params.warmup_steps or not failed:
        return 0, 0, metrics, {}
    prompts, owner, level = [], [], []
    for g, grp in enumerate(failed):
        for lv, ids in enumerate(hint_prompt_ids(ctx.source, grp.item, params), start=1):
            prompts.append(ids)
            owner.append(g)
            level.append(lv)
    hint_params = dataclasses.replace(ctx.params, seed=mix_seed(call_seed(ctx.params), 83))
    answers = [comps[0] for comps in ctx.engine.generate(prompts, 1, hint_params)]
    with ctx.timer("scoring"):
        scores = ctx.score([failed[g].item for g in owner], [list(a.token_ids) for a in answers])
    rewards, correct = scores.rewards, scores.correct
    solved_levels = []
    for g, grp in enumerate(failed):
        right = [j for j in range(len(prompts)) if owner[j] == g and correct[j]]
        if not right:
            continue
        j = min(right, key=lambda j: level[j])  # the lowest level; the first of it
        grp.prompts = list(grp.answer_prompts())
        grp.prompts[0] = prompts[j]
        grp.responses[0], grp.logprobs[0] = list(answers[j].token_ids), list(answers[j].logprobs)
        grp.rewards[0], grp.correct[0] = rewards[j], True
        solved_levels.append(level[j])
    decoded = sum(len(a.token_ids) for a in answers)
    metrics.update({
        "scaffold/solved_with_hint": float(len(solved_levels)), "scaffold/hint_answers": float(len(answers)),
        "scaffold/hint_accuracy": sum(correct) / len(correct), "scaffold/decoded_tokens": float(decoded),
    })
    if solved_levels:
        metrics["scaffold/solved_level_mean"] = sum(solved_levels) / len(solved_levels)
    return decoded, sum(len(p) for p in prompts), metrics, scores.verdicts


@ROLLOUTS.register("scaffold", ScaffoldParams, roles=("response",), variable_group_size=True)
def scaffold_rollout(ctx: RolloutContext, items: list[PromptItem]) -> RolloutResult:
    """G answers per prompt; after the warm-up, an all-wrong group gets the lowest-level hinted
    answer that is correct in place of its first answer (module docstring)."""
    for item in items:
        _check_hints(ctx.source, item, ctx.rollout_params)
    return group_rows(ctx, items, hook=_hint_failed_groups)[0]
