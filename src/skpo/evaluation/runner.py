"""Evaluate a model on a benchmark: sample ``k`` completions per problem, verify, summarise.

:func:`evaluate` is one plain pipeline of four steps, with its settings in one record
(:class:`EvalSettings`)::

    prepare_prompts ─► generate_samples ─► score_samples ─► report
    (problems, prompt ids,   (HFEngine.generate,   (decode, verifier)   (metrics, records)
     budgets)                 n=k per prompt)

Prompts:

- ``arith``: :func:`skpo.tasks.templates.plain_input_ids` (``Q: 37+48-12\\nA:\\n``), exactly what
  the policy is trained on.
- text benchmarks: the tokenizer's chat template around the spec's user message when the
  tokenizer has one (``use_chat_template=None``, the default), else the spec's plain template;
  ``use_chat_template=True/False`` forces either.
- given: a caller may pass its own ``problems`` (the warm start's validation set) and its own
  ``prompt_ids`` (skip inputs ``[s, q]``); sampling and scoring stay the same.

Sampling: one :class:`~skpo.engines.engine.SamplingParams` for the whole benchmark; problem ``i``
gets the prompt seed ``mix_seed(seed, i)``, so its samples depend only on the model, its prompt,
``seed`` and ``i`` — not on ``limit``, batch size or the other problems. Stop tokens: the
tokenizer's EOS and the model's ``generation_config.eos_token_id`` (chat models often have two).
A prompt whose length plus ``max_new_tokens`` exceeds the model's ``max_position_embeddings``
gets a smaller budget (never below 0); how many did is reported as ``prompts_over_context``.

Simplifications: one device, the model as loaded (no tensor parallelism); a problem's ``k``
samples are verified after all generation is done.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from skpo.engines.engine import Completion, SamplingParams, prompt_seeds
from skpo.engines.hf_engine import HFEngine
from skpo.errors import EvaluationInterrupted
from skpo.evaluation.benchmarks import BenchmarkSpec, Problem, get_spec, load_problems, score_completions
from skpo.evaluation.metrics import (
    avg_at_k,
    maj_at_k,
    majority_vote,
    mean_pass_at_k,
    pass_k_values,
    success_histogram,
)
from skpo.rewards.arith import check_steps
from skpo.rewards.countdown import numbers_and_target
from skpo.rewards.registry import RewardEntry
from skpo.tasks.countdown import FIRST_MOVE_KINDS, first_move_kind
from skpo.tasks.dataset import encode_problems
from skpo.tasks.dataset import prompt_format as format_of
from skpo.tasks.prompts import has_chat_template, stop_token_ids
from skpo.tasks.templates import response_ids

__all__ = ["EvalPrompts", "EvalSettings", "evaluate", "prepare_prompts", "generate_samples", "score_samples", "report",
           "build_prompts", "arith_step_metrics", "countdown_move_metrics",
           "has_chat_template"]

ARITH_EXTRA_TOKENS = 16
"""``arith`` budget: the longest reference response of the problems plus this many tokens."""


def build_prompts(
    spec: BenchmarkSpec, tokenizer: Any, problems: Sequence[Problem], use_chat_template: bool | None = None
) -> tuple[list[list[int]], str]:
    """Prompt token ids for ``problems`` and the format used (``arith`` | ``chat`` | ``plain``),
    without the overlong filter (see :func:`skpo.tasks.dataset.encode_problems`)."""
    enc = encode_problems(spec.model_copy(update={"max_prompt_tokens": None}), tokenizer, problems, use_chat_template)
    return enc.prompt_ids, enc.prompt_format


def _budget(
    spec: BenchmarkSpec, tokenizer: Any, problems: Sequence[Problem], max_new_tokens: int | None
) -> int:
    if max_new_tokens is not None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        return max_new_tokens
    if spec.reward == "arith":
        return max(len(response_ids(tokenizer, p.arith)) for p in problems if p.arith) + ARITH_EXTRA_TOKENS
    if spec.synthetic == "countdown":
        return max(len(response_ids(tokenizer, p.countdown)) for p in problems if p.countdown) + ARITH_EXTRA_TOKENS
    return spec.max_new_tokens or 1024


def arith_step_metrics(problems: Sequence[Problem], completions: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Per-step quality of arithmetic solutions (see :func:`skpo.rewards.arith.check_steps`).

    Returns:
        ``step_accuracy``: mean over samples of (correct lines) / max(lines written, steps of the
        problem) — a missing step and an extra line both count as wrong lines;
        ``local_step_accuracy``: the same with *locally valid* lines (right arithmetic from the
        previous written result, i.e. an error carried forward is not counted again);
        ``step_accuracy_by_position``: for step ``i``, the fraction of samples whose line ``i``
        is correct, over samples of problems with more than ``i`` steps;
        ``first_error_counts``: samples by 0-based first wrong step (``str(i)``; ``i`` equal to the
        number of steps means only the ending was wrong) and ``"none"`` for fully right ones;
        ``mean_first_error_fraction``: mean of first error / number of steps over samples with an
        error (0 = the first line, 1 = only the ending).
    """
    step_acc: list[float] = []
    local_acc: list[float] = []
    pos_right: list[int] = []
    pos_total: list[int] = []
    first_errors: dict[str, int] = {}
    fractions: list[float] = []
    for problem, texts in zip(problems, completions):
        arith = problem.arith
        assert arith is not None
        n_steps = arith.n_ops
        if len(pos_total) < n_steps:
            pos_right += [0] * (n_steps - len(pos_right))
            pos_total += [0] * (n_steps - len(pos_total))
        for text in texts:
            check = check_steps(text, arith)
            denom = max(len(check.correct), n_steps)
            step_acc.append(sum(check.correct) / denom)
            local_acc.append(sum(check.locally_valid) / denom)
            for i in range(n_steps):
                pos_total[i] += 1
                pos_right[i] += int(i < len(check.correct) and check.correct[i])
            key = "none" if check.first_error is None else str(check.first_error)
            first_errors[key] = first_errors.get(key, 0) + 1
            if check.first_error is not None:
                fractions.append(check.first_error / n_steps)
    ordered = dict(sorted(first_errors.items(), key=lambda kv: (kv[0] == "none", int(kv[0]) if kv[0] != "none" else 0)))
    return {
        "step_accuracy": sum(step_acc) / len(step_acc) if step_acc else 0.0,
        "local_step_accuracy": sum(local_acc) / len(local_acc) if local_acc else 0.0,
        "step_accuracy_by_position": [r / t if t else 0.0 for r, t in zip(pos_right, pos_total)],
        "first_error_counts": ordered,
        "mean_first_error_fraction": sum(fractions) / len(fractions) if fractions else None,
    }


def countdown_move_metrics(problems: Sequence[Problem], completions: Sequence[Sequence[str]],
                           verdicts: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """How the first moves of countdown samples stand (:func:`skpo.tasks.countdown.first_move_kind`).

    Returns:
        ``first_move_shares``: the share of samples per kind (``reachable``, ``dead_end``,
        ``invalid``, ``no_move``);
        ``accuracy_by_first_move``: the share of correct samples among those of each kind
        (``None`` for a kind with no sample) — a dead end can never be correct, so how far
        ``reachable`` is above the overall accuracy says how much the first move decides.
    """
    counts = dict.fromkeys(FIRST_MOVE_KINDS, 0)
    right = dict.fromkeys(FIRST_MOVE_KINDS, 0)
    for problem, texts, row in zip(problems, completions, verdicts):
        numbers, target = numbers_and_target(problem)
        for text, verdict in zip(texts, row):
            kind = first_move_kind(text, numbers, target)
            counts[kind] += 1
            right[kind] += int(verdict.correct)
    total = sum(counts.values())
    return {
        "first_move_shares": {k: counts[k] / total if total else 0.0 for k in FIRST_MOVE_KINDS},
        "accuracy_by_first_move": {k: right[k] / counts[k] if counts[k] else None for k in FIRST_MOVE_KINDS},
        "samples": total,
    }


def _progress(label: str):
    # optional where no bar is shown (progress=False): a bare GPU image has no rich (scripts/gpu_check.sh)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
    )


@dataclass(frozen=True)
class EvalSettings:
    """How a benchmark is evaluated.

    Attributes:
        k: samples per problem.
        temperature, top_p: sampling (``temperature = 0`` is greedy; then all ``k`` samples agree).
        max_new_tokens: generation budget per sample (default: the spec's; ``arith``: the longest
            reference response + 16).
        limit: evaluate only the first ``limit`` problems.
        seed: sampling seed (``None``: drawn from torch's RNG and recorded in the result).
        batch_size: most (prompt, sample) rows decoded together.
        use_chat_template: ``None`` = when the tokenizer has one (text benchmarks only).
        save_samples: keep every completion's text and verdict in ``problems[i]["samples"]``.
        progress: show a progress bar (stderr).
        math_timeout_s: per-answer bound of the math verifier.
        autocast_dtype: compute dtype for generation (bf16/fp16 autocast over the model's own
            weights); ``None`` runs in the weights' dtype.
    """

    k: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int | None = None
    limit: int | None = None
    seed: int | None = 0
    batch_size: int = 64
    use_chat_template: bool | None = None
    save_samples: bool = False
    progress: bool = False
    math_timeout_s: float = 5.0
    autocast_dtype: torch.dtype | None = None


@dataclass
class EvalPrompts:
    """The problems of one evaluation and what generation needs of them (:func:`prepare_prompts`).

    Attributes:
        problems / prompts: the problems kept and their prompt ids (one each).
        prompt_format: ``arith`` | ``chat`` | ``plain``.
        budget: new tokens per sample; ``per_prompt``: the same, cut where the prompt plus the
            budget would pass the model's context (``over_context`` of them).
        dropped: ids of the problems whose prompt was longer than ``max_prompt_tokens``.
    """

    problems: list[Problem]
    prompts: list[list[int]]
    prompt_format: str
    budget: int
    per_prompt: list[int]
    over_context: int
    dropped: list[str]


def evaluate(
    model: torch.nn.Module,
    tokenizer: Any,
    spec: BenchmarkSpec | str,
    settings: EvalSettings = EvalSettings(),
    *,
    problems: Sequence[Problem] | None = None,
    prompt_ids: Sequence[Sequence[int]] | None = None,
    should_stop: Callable[[], bool] | None = None,
    reward: RewardEntry | None = None,
) -> dict[str, Any]:
    """Sample ``settings.k`` completions per problem of ``spec`` and score them:
    :func:`prepare_prompts` → :func:`generate_samples` → :func:`score_samples` → :func:`report`.

    Args:
        model: a causal LM on its device (``transformers`` style).
        tokenizer: its tokenizer.
        spec: a :class:`BenchmarkSpec` or a built-in name (``arith``, ``math500``, ...).
        settings: sampling, budget, batching, prompts and output (:class:`EvalSettings`).
        problems: evaluate these instead of the spec's own (e.g. a validation set drawn by the
            caller; ``arith``: :func:`skpo.tasks.dataset.arith_records`); ``spec`` still gives
            the reward, template and budget.
        prompt_ids: one prompt (token ids) per problem, used as given instead of the template —
            e.g. SKPO's skip input ``[s, q]``. They must be written in the spec's prompt format
            (stop tokens and strings follow it); no overlong filter.
        should_stop: asked after every engine batch (``batch_size`` rows) but the last; ``True``
            raises :class:`~skpo.errors.EvaluationInterrupted` (a run stopping on a signal), so
            a stop comes within one batch at any batch size. The batches are the same as
            without it: which samples are drawn does not change.
        reward: score with this reward instead of ``spec.reward``'s (a run's own reward function
            on the rows it held out).

    Returns:
        A JSON-serialisable dict; see ``docs/evaluation.md``. Main keys: ``benchmark``,
        ``n_problems``, ``k``, ``metrics`` (``avg@k``, ``pass@1``, ``pass@2``, …, ``pass@k``,
        ``maj@k`` — ``None`` for code —, ``mean_response_tokens``, ``frac_truncated``),
        ``success_histogram`` (``[k + 1]`` problem counts by number correct), ``step_metrics``
        (``arith`` only), ``problems`` (per-problem records).
    """
    if settings.k < 1:
        raise ValueError(f"k must be >= 1, got {settings.k}")
    if isinstance(spec, str):
        spec = get_spec(spec)
    if settings.seed is None:
        settings = dataclasses.replace(settings, seed=int(torch.randint(0, 2**31 - 1, (1,)).item()))
    started = time.perf_counter()
    prompts = prepare_prompts(model, tokenizer, spec, settings, problems, prompt_ids)
    completions = generate_samples(model, tokenizer, spec, prompts, settings, should_stop)
    generated = time.perf_counter()
    texts, verdicts = score_samples(tokenizer, spec, prompts, completions, settings, reward)
    verified = time.perf_counter()
    seconds = {"generate": round(generated - started, 3), "verify": round(verified - generated, 3),
               "total": round(time.perf_counter() - started, 3)}
    return report(spec, prompts, completions, texts, verdicts, settings, seconds)


def prepare_prompts(model: torch.nn.Module, tokenizer: Any, spec: BenchmarkSpec, settings: EvalSettings,
                    problems: Sequence[Problem] | None = None,
                    prompt_ids: Sequence[Sequence[int]] | None = None) -> EvalPrompts:
    """The problems (the spec's, or ``problems``; the first ``settings.limit``), their prompts
    (templated, overlong ones dropped; or ``prompt_ids`` as given) and token budgets."""
    limit = settings.limit
    if problems is not None and (not problems or (limit is not None and limit < 1)):
        raise ValueError(f"{spec.name}: no problems to evaluate (given {len(problems)}, limit {limit})")
    problems = load_problems(spec, limit) if problems is None else list(problems)[:limit]
    dropped: list[str] = []
    if prompt_ids is None:
        encoded = encode_problems(spec, tokenizer, problems, settings.use_chat_template)
        problems, prompts, prompt_format, dropped = (encoded.problems, encoded.prompt_ids, encoded.prompt_format,
                                                     encoded.dropped)
    else:
        prompts = [list(p) for p in prompt_ids][:limit]
        if len(prompts) != len(problems):
            raise ValueError(f"{len(prompts)} prompts for {len(problems)} problems")
        prompt_format = format_of(spec, tokenizer, settings.use_chat_template)
    if not problems:
        raise ValueError(f"{spec.name}: every prompt is longer than max_prompt_tokens={spec.max_prompt_tokens}")
    budget = _budget(spec, tokenizer, problems, settings.max_new_tokens)
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    per_prompt = [budget] * len(prompts)
    over = 0
    if context:
        for i, p in enumerate(prompts):
            if len(p) + budget > context:
                per_prompt[i] = max(0, int(context) - len(p))
                over += 1
    return EvalPrompts(list(problems), prompts, prompt_format, budget, per_prompt, over, dropped)


def generate_samples(model: torch.nn.Module, tokenizer: Any, spec: BenchmarkSpec, prompts: EvalPrompts,
                     settings: EvalSettings, should_stop: Callable[[], bool] | None = None) -> list[list[Completion]]:
    """``settings.k`` completions per prompt ``[N][k]`` from the :class:`HFEngine`, prompt ``i``
    seeded with ``mix_seed(settings.seed, i)`` (``settings.seed`` resolved, not ``None``)."""
    k, batch_size, ids = settings.k, settings.batch_size, prompts.prompts
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token; cannot pad prompts")
    stop = list(spec.stop) if prompts.prompt_format == "plain" else []
    done = 0  # problems generated in full

    def stop_if_asked() -> None:
        if should_stop is not None and should_stop():
            raise EvaluationInterrupted(f"{spec.name}: stopped after {done} of {len(ids)} problems")

    engine = HFEngine(
        model,
        pad_token_id=int(pad),
        eos_token_id=stop_token_ids(tokenizer, model, chat=prompts.prompt_format == "chat"),
        decode=lambda token_ids: tokenizer.decode(token_ids, skip_special_tokens=False),
        batch_size=batch_size,
        autocast_dtype=settings.autocast_dtype,
        between_batches=stop_if_asked,  # a stop within one batch, whatever the prompts per call
    )
    seeds = prompt_seeds(settings.seed, len(ids))
    # Prompts per engine call: enough to fill a batch, small enough for a live progress bar.
    per_call = max(1, batch_size // k) * 4
    results: list[list[Completion]] = []
    bar = _progress(f"{spec.name} k={k}") if settings.progress else None
    task = bar.add_task("generate", total=len(ids)) if bar else None
    if bar:
        bar.start()
    try:
        for start in range(0, len(ids), per_call):
            end = min(len(ids), start + per_call)
            params = SamplingParams(temperature=settings.temperature, top_p=settings.top_p,
                                    max_new_tokens=prompts.budget, stop=stop, seed=seeds[start:end])
            results += engine.generate(ids[start:end], k, params, max_new_tokens=prompts.per_prompt[start:end])
            done = end
            if bar:
                bar.update(task, completed=end)
            if end < len(ids):
                stop_if_asked()
    finally:
        if bar:
            bar.stop()
    return results


def score_samples(tokenizer: Any, spec: BenchmarkSpec, prompts: EvalPrompts, completions: list[list[Completion]],
                  settings: EvalSettings, reward: RewardEntry | None = None) -> tuple[list[list[str]], list[list[Any]]]:
    """The completions' texts (special tokens skipped) and their verdicts ``[N][k]``, by the
    spec's reward or ``reward``."""
    texts = [[tokenizer.decode(c.token_ids, skip_special_tokens=True) for c in row] for row in completions]
    verdicts = score_completions(spec, prompts.problems, texts, plain_prompt=prompts.prompt_format == "plain",
                                 math_timeout_s=settings.math_timeout_s, reward=reward, tokenizer=tokenizer)
    return texts, verdicts


def report(spec: BenchmarkSpec, prompts: EvalPrompts, completions: list[list[Completion]], texts: list[list[str]],
           verdicts: list[list[Any]], settings: EvalSettings, seconds: dict[str, float]) -> dict[str, Any]:
    """The result record of :func:`evaluate` (its docstring) from the scored samples."""
    k, problems = settings.k, prompts.problems
    correct = [[v.correct for v in row] for row in verdicts]
    counts = [sum(row) for row in correct]
    answers = [[v.extracted for v in row] for row in verdicts]
    metrics: dict[str, Any] = {f"avg@{k}": avg_at_k(correct)}
    for kk in pass_k_values(k):
        metrics[f"pass@{kk}"] = mean_pass_at_k(counts, k, kk)
    metrics[f"maj@{k}"] = None if spec.reward == "code" else maj_at_k(answers, correct)
    n_samples = len(problems) * k
    metrics["mean_response_tokens"] = sum(len(c) for row in completions for c in row) / n_samples
    metrics["frac_truncated"] = sum(c.finish_reason == "length" for row in completions for c in row) / n_samples

    records = []
    for p, row_v, row_t, row_c, n_right in zip(problems, verdicts, texts, completions, counts):
        majority, _ = majority_vote([v.extracted for v in row_v])
        record: dict[str, Any] = {"index": p.index, "id": p.id, "gold": p.gold, "n_correct": n_right,
                                  "majority_answer": majority}
        if settings.save_samples:
            record["samples"] = [
                {"text": t, "correct": v.correct, "reason": v.reason, "extracted": v.extracted,
                 "tokens": len(c), "finish_reason": c.finish_reason}
                for v, t, c in zip(row_v, row_t, row_c)
            ]
        records.append(record)

    out: dict[str, Any] = {
        "benchmark": spec.name,
        "reward": spec.reward,
        "n_problems": len(problems),
        "k": k,
        "prompt_format": prompts.prompt_format,
        "sampling": {"temperature": settings.temperature, "top_p": settings.top_p, "max_new_tokens": prompts.budget,
                     "seed": settings.seed},
        "metrics": metrics,
        "success_histogram": success_histogram(counts, k),
        "prompts_over_context": prompts.over_context,
        "dropped_overlong": len(prompts.dropped),
        "seconds": seconds,
    }
    if spec.reward == "arith":
        out["step_metrics"] = arith_step_metrics(problems, texts)
    if spec.reward == "countdown":
        out["move_metrics"] = countdown_move_metrics(problems, texts, verdicts)
    out["problems"] = records
    return out
