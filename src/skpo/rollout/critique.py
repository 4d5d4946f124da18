"""Critique-GRPO's rollout kind ``critique_refine``: answers, critiques, refinements, one group.

The whole story (sources, readings, how each step runs): ``docs/methods.md``, section "Notes from skpo.rollout.critique"."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch

from skpo.engines import HFEngine, SamplingParams, call_seed, mix_seed
from skpo.models.loading import load_policy, load_tokenizer, resolve_model_path
from skpo.rollout.base import ROLLOUTS, RolloutContext, RolloutResult
from skpo.rows import Rows, concat_rows, pad_responses
from skpo.tasks import countdown
from skpo.tasks.arith import solution_text
from skpo.tasks.critiques import critic_prompt_ids, refinement_prompt_ids, step_critique, verdict_critique
from skpo.tasks.dataset import prompt_messages
from skpo.tasks.prompts import has_chat_template, stop_token_ids
from skpo.tasks.sources import PromptItem

__all__ = ["CRITIQUE_SOURCES", "CritiqueRolloutParams", "critique_refine_rollout", "select_refinements"]

CRITIQUE_SOURCES = ("auto", "steps", "ground_truth", "indicative", "model")


@dataclass(frozen=True)
class CritiqueRolloutParams:
    """``num_refinements`` (k, refinements that join each group), ``critique`` (where critiques
    come from, see the module doc), ``critic_model`` (with ``critique: model``: a model
    directory, ``tiny-arith`` or ``policy``) and the critic's sampling settings."""

    num_refinements: int = 1
    critique: Literal["auto", "steps", "ground_truth", "indicative", "model"] = "auto"
    critic_model: str | None = None
    critic_max_new_tokens: int | None = None
    critic_temperature: float = 0.7
    critic_top_p: float = 0.75

    def __post_init__(self) -> None:
        if self.num_refinements < 1:
            raise ValueError(f"num_refinements must be >= 1 (got {self.num_refinements})")
        if self.critique not in CRITIQUE_SOURCES:
            raise ValueError(f"critique must be one of {list(CRITIQUE_SOURCES)} (got {self.critique!r})")
        if self.critique == "model" and not self.critic_model:
            raise ValueError("critique 'model' needs critic_model (a model directory, 'tiny-arith' or 'policy')")
        if self.critic_model is not None and self.critique != "model":
            raise ValueError(f"critic_model is only read with critique 'model' (got critique {self.critique!r})")
        if self.critic_max_new_tokens is not None and self.critic_max_new_tokens < 1:
            raise ValueError(f"critic_max_new_tokens must be >= 1 (got {self.critic_max_new_tokens})")
        if not self.critic_temperature >= 0 or not 0 < self.critic_top_p <= 1:
            raise ValueError(f"need critic_temperature >= 0 and 0 < critic_top_p <= 1 "
                             f"(got {self.critic_temperature}, {self.critic_top_p})")

    def check_group_size(self, group_size: int) -> None:
        """The refinements are chosen among the G answers' ones."""
        if self.num_refinements > group_size:
            raise ValueError(f"num_refinements={self.num_refinements} must be <= group_size={group_size} "
                             "(one refinement per answer, k of them kept)")


def select_refinements(rewards: list[float], k: int) -> list[int]:
    """Positions of the ``k`` refinements kept from one group's: highest reward first, ties in
    sampling order (``k = 1``: the first correct one, else the first of the best — the source's
    ``process_refinement_groups``)."""
    return sorted(range(len(rewards)), key=lambda i: (-rewards[i], i))[:k]


_CRITICS: dict[tuple[str, str], tuple[HFEngine, Any]] = {}


def _critic(ctx: RolloutContext, name: str, tokenizer: Any) -> tuple[Any, Any, list[int]]:
    """``(engine, tokenizer, stop ids)`` of the critic: the policy's own engine for ``policy``,
    else a Hugging Face engine over the model directory (loaded once per process and device)."""
    if name == "policy":
        return ctx.engine, tokenizer, list(ctx.params.stop_token_ids)
    device = str(getattr(ctx.engine, "device", None) or ("cuda" if torch.cuda.is_available() else "cpu"))
    key = (name, device)
    if key not in _CRITICS:
        try:
            path = resolve_model_path(name)
            critic_tokenizer = load_tokenizer(path)
            model = load_policy(path, device=device)
        except (FileNotFoundError, NotADirectoryError) as err:
            raise ValueError(f"rollout_params.critic_model: {err}") from None
        model.eval()
        model.requires_grad_(False)
        stops = stop_token_ids(critic_tokenizer, model, chat=has_chat_template(critic_tokenizer))
        pad = critic_tokenizer.pad_token_id if critic_tokenizer.pad_token_id is not None else stops[0]
        engine = HFEngine(model, pad_token_id=pad, eos_token_id=stops,
                          decode=lambda ids: critic_tokenizer.decode(ids, skip_special_tokens=True))
        _CRITICS[key] = (engine, critic_tokenizer)
    engine, critic_tokenizer = _CRITICS[key]
    return engine, critic_tokenizer, list(engine.eos_token_ids)


def _reference(item: PromptItem) -> tuple[str, str]:
    """``(question, reference)`` the critic compares against: the reference solution of an
    arithmetic or countdown problem, else the gold answer."""
    problem = item.answer
    arith = getattr(problem, "arith", None)
    if arith is not None:
        return arith.question, solution_text(arith)
    game = getattr(problem, "countdown", None)
    if game is not None:
        return game.question, countdown.solution_text(game)
    return str(problem.question), str(problem.gold)


def _critiques(ctx: RolloutContext, owners: list[PromptItem], texts: list[str], correct: list[bool],
               tokenizer: Any) -> tuple[list[str], int, int]:
    """One critique per answer, and the critic's ``(decoded, prefill)`` token counts."""
    p = ctx.rollout_params
    out: list[str] = []
    wrong: list[int] = []
    for b, (item, text, ok) in enumerate(zip(owners, texts, correct)):
        kind = p.critique
        arith = getattr(item.answer, "arith", None)
        if kind == "auto":
            kind = "steps" if arith is not None else "ground_truth"
        if kind == "steps":
            if arith is None:
                raise ValueError("rollout_params.critique=steps needs the embedded arithmetic task "
                                 f"(prompt {item.key!r} has no arithmetic problem); use ground_truth, indicative or model")
            out.append(step_critique(text, arith))
        elif kind == "indicative":
            out.append(verdict_critique(ok))
        elif kind == "ground_truth" or ok:  # model: right answers get the ground-truth template
            out.append(verdict_critique(ok, str(item.answer.gold)))
        else:
            out.append("")
            wrong.append(b)
    if not wrong:
        return out, 0, 0
    engine, critic_tokenizer, stops = _critic(ctx, p.critic_model, tokenizer)
    prompts = []
    for b in wrong:
        question, reference = _reference(owners[b])
        prompts.append(critic_prompt_ids(critic_tokenizer, question, texts[b], reference))
    params = SamplingParams(temperature=p.critic_temperature, top_p=p.critic_top_p,
                            max_new_tokens=p.critic_max_new_tokens or ctx.max_new_tokens, stop_token_ids=stops,
                            seed=mix_seed(call_seed(ctx.params), 67))
    completions = engine.generate(prompts, 1, params)
    for b, comps in zip(wrong, completions):
        out[b] = critic_tokenizer.decode(list(comps[0].token_ids), skip_special_tokens=True).strip()
    return out, sum(len(c[0].token_ids) for c in completions), sum(len(x) for x in prompts)


def _task_messages(source: Any, item: PromptItem) -> list[dict] | None:
    """The task's conversation of ``item`` (data sets), ``None`` for the plain arithmetic layout."""
    spec = getattr(source, "spec", None)
    if spec is None:
        return None
    return prompt_messages(spec, item.answer, bool(source.chat))


@ROLLOUTS.register("critique_refine", CritiqueRolloutParams, roles=("response", "refinement"),
                   joint_roles=("response", "refinement"))
def critique_refine_rollout(ctx: RolloutContext, items: list[PromptItem]) -> RolloutResult:
    """G answers per prompt, a critique of each, a refinement of each; k refinements join the
    group (module doc)."""
    p, g = ctx.rollout_params, ctx.group_size
    tokenizer = getattr(ctx.source, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("rollout 'critique_refine' needs the prompt source's tokenizer (source.tokenizer)")
    decode = lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True)  # noqa: E731

    # 1. G answers per prompt, scored  [P·G]
    outs = ctx.engine.generate([list(it.prompt_ids) for it in items], g, ctx.params)
    owners = [it for it in items for _ in range(g)]
    answers = [list(c.token_ids) for comps in outs for c in comps]
    answer_lps = [list(c.logprobs) for comps in outs for c in comps]
    with ctx.timer("scoring"):
        scores = ctx.score(owners, answers)
    rewards, correct = scores.rewards, scores.correct
    texts = [decode(a) for a in answers]

    # 2. a critique of every answer (a critic model's decoding is part of the rollout's time)
    critiques, critic_decoded, critic_prefill = _critiques(ctx, owners, texts, correct, tokenizer)

    # 3. one refinement per answer, sampled under (q, answer, critique), scored as an answer to q
    refine_prompts = [
        refinement_prompt_ids(tokenizer, it.prompt_ids, it.head, text, critique,
                              messages=_task_messages(ctx.source, it), chat=bool(getattr(ctx.source, "chat", False)))
        for it, text, critique in zip(owners, texts, critiques)
    ]
    refine_params = dataclasses.replace(ctx.params, seed=mix_seed(call_seed(ctx.params), 61))
    refined_out = [comps[0] for comps in ctx.engine.generate(refine_prompts, 1, refine_params)]
    refined = [list(c.token_ids) for c in refined_out]
    with ctx.timer("scoring"):
        refine_scores = ctx.score(owners, refined)
    refine_rewards, refine_correct = refine_scores.rewards, refine_scores.correct

    # 4. k refinements per group, correct ones first
    kept = [q * g + j for q in range(len(items)) for j in select_refinements(refine_rewards[q * g : (q + 1) * g],
                                                                           p.num_refinements)]
    ids, mask, lps = pad_responses(answers, answer_lps, ctx.pad_id)
    response = Rows([list(it.prompt_ids) for it in owners], ids, mask, lps, torch.tensor(rewards, dtype=torch.float32),
                    [it.key for it in owners])
    r_ids, r_mask, r_lps = pad_responses([refined[b] for b in kept], [list(refined_out[b].logprobs) for b in kept],
                                         ctx.pad_id)
    refinement = Rows([list(owners[b].prompt_ids) for b in kept], r_ids, r_mask, r_lps,
                      torch.tensor([refine_rewards[b] for b in kept], dtype=torch.float32), [owners[b].key for b in kept])
    rows = concat_rows([response, refinement], ctx.pad_id, roles=["response", "refinement"])

    decoded_answers = sum(len(a) for a in answers)
    decoded_refinements = sum(len(r) for r in refined)
    prefill = sum(len(it.prompt_ids) for it in items) + sum(len(x) for x in refine_prompts) + critic_prefill
    metrics = {
        "reward/mean": float(torch.tensor(rewards).mean()),  # the policy's own answers, as for every method
        "accuracy/mean": float(torch.tensor(correct, dtype=torch.float32).mean()),
        "response_length/mean": float(mask.sum(-1).mean()),
        "critique/refinement_accuracy": float(torch.tensor(refine_correct, dtype=torch.float32).mean()),
        "critique/kept_accuracy": sum(refine_correct[b] for b in kept) / len(kept),
        "critique/refinement_length": float(r_mask.sum(-1).mean()),
        "tokens/decoded_answers": decoded_answers,
        "tokens/decoded_refinements": decoded_refinements,
        "tokens/decoded_critic": critic_decoded,
        "tokens/prefill": prefill,
    }
    wrong = [b for b, ok in enumerate(correct) if not ok]
    if wrong:  # share of wrong answers the refinement fixes (defined only when there are some)
        metrics["critique/fixed_rate"] = sum(refine_correct[b] for b in wrong) / len(wrong)
    right = [b for b, ok in enumerate(correct) if ok]
    if right:
        metrics["critique/broken_rate"] = sum(not refine_correct[b] for b in right) / len(right)
    decoded = decoded_answers + decoded_refinements + critic_decoded
    return RolloutResult(rows, metrics, decoded, prefill, verdicts={**scores.verdicts, **refine_scores.verdicts})
