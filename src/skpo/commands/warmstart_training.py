"""``skpo warmstart``: supervised warm start of the tiny Qwen2 model on an embedded task
(chained arithmetic, or countdown with ``--task countdown``).

The whole story (sources, readings, how each step runs): ``docs/embedded-default.md``, section "Notes from skpo.commands.warmstart_training"."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from skpo.algorithms import PolicyLossInputs
from skpo.commands.warmstart_config import WarmstartConfig
from skpo.evaluation.benchmarks import get_spec
from skpo.evaluation.runner import EvalSettings, evaluate
from skpo.methods.record import LossTerm, term_loss
from skpo.models.forward import policy_forward
from skpo.models.loading import load_policy, shipped_model_dir
from skpo.models.tiny import build_tiny_model, count_parameters
from skpo.models.tokenizer import build_tokenizer
from skpo.rows import Rows, pad_responses
from skpo.tasks import countdown
from skpo.tasks.arith import (
    ArithConfig,
    ArithProblem,
    flawed_solution,
    iter_problems,
    sample_problem,
    solution_text,
    split_of,
)
from skpo.tasks.countdown import CountdownConfig, CountdownProblem
from skpo.tasks.dataset import arith_records, countdown_records
from skpo.tasks.templates import Synthetic, plain_input_ids, response_ids, skip_input_ids
from skpo.training.schedule import lr_factor

EXAMPLE_KINDS: tuple[str, ...] = ("plain", "skip_correct", "skip_flawed")

SFT_TERM = LossTerm(role="response", advantage="grpo", loss="sft", agg="token-mean")
"""The warm start's one loss term. ``advantage`` is a required field of the record and is never
computed here: ``sft`` reads no advantage (:func:`term_loss` reads only ``loss`` and ``agg``)."""

MINUTES_AXIS_STEPS = 1000
"""With ``--minutes`` and no step cap, the schedule runs on a virtual axis of this many steps
(wall-clock progress × 1000), with 5 % warm-up."""


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Example:
    """One training sequence: ``prompt_ids`` ``[L_c]`` (the context, never a target) and
    ``response_ids`` ``[L_o]`` (reference solution + EOS, the targets)."""

    prompt_ids: list[int]
    response_ids: list[int]
    kind: str

    @property
    def input_ids(self) -> list[int]:
        """The whole sequence ``[L_c + L_o]``."""
        return self.prompt_ids + self.response_ids

    @property
    def loss_mask(self) -> list[int]:
        """``[L_c + L_o]``: 1 on response tokens."""
        return [0] * len(self.prompt_ids) + [1] * len(self.response_ids)


def make_example(
    problem: ArithProblem, kind: str, tokenizer: PreTrainedTokenizerBase, rng: random.Random
) -> Example:
    """A training sequence of ``kind`` for ``problem`` (see module doc); target = reference solution."""
    prompt = plain_input_ids(tokenizer, problem)
    target = response_ids(tokenizer, problem)
    if kind == "plain":
        context = prompt
    elif kind == "skip_correct":
        draft = target[:-1]  # reference solution without EOS
        context = skip_input_ids(draft[: rng.randint(1, len(draft))], prompt)
    elif kind == "skip_flawed":
        flawed = flawed_solution(problem, rng)
        draft = tokenizer.encode(flawed.text, add_special_tokens=False)
        # cut at or after the newline that ends the wrong line: the draft always shows the error
        # (without the newline, a wrong "1" could still read as the start of a right "10")
        lines = flawed.text.split("\n")
        shown = "\n".join(lines[: flawed.error_step + 1]) + "\n"
        error_end = len(tokenizer.encode(shown, add_special_tokens=False))
        context = skip_input_ids(draft[: rng.randint(error_end, len(draft))], prompt)
    else:
        raise ValueError(f"unknown example kind {kind!r}; expected one of {EXAMPLE_KINDS}")
    return Example(list(context), list(target), kind)


def make_countdown_example(
    problem: CountdownProblem, kind: str, tokenizer: PreTrainedTokenizerBase, rng: random.Random, task: CountdownConfig
) -> Example:
    """A countdown training sequence of ``kind`` (target = the reference solution):

    - ``plain``: ``q``;
    - ``skip_correct``: ``[s, q]``, ``s`` a prefix (random length, at least one token) of the
      reference solution;
    - ``skip_flawed``: ``[s, q]``, ``s`` a prefix of a solution whose first move is a dead end
      (:func:`skpo.tasks.countdown.flawed_solution`), cut at or after the newline that ends that
      move, so the draft always shows it; a problem without a dead-end first move gets a
      ``skip_correct`` context instead.
    """
    prompt = plain_input_ids(tokenizer, problem)
    target = response_ids(tokenizer, problem)
    if kind == "plain":
        context = prompt
    elif kind == "skip_correct":
        draft = target[:-1]
        context = skip_input_ids(draft[: rng.randint(1, len(draft))], prompt)
    elif kind == "skip_flawed":
        flawed = countdown.flawed_solution(problem, task, rng)
        if flawed is None:
            draft = target[:-1]
            context = skip_input_ids(draft[: rng.randint(1, len(draft))], prompt)
        else:
            draft = tokenizer.encode(flawed.text, add_special_tokens=False)
            shown = flawed.text.split("\n")[0] + "\n"
            error_end = len(tokenizer.encode(shown, add_special_tokens=False))
            context = skip_input_ids(draft[: rng.randint(error_end, len(draft))], prompt)
    else:
        raise ValueError(f"unknown example kind {kind!r}; expected one of {EXAMPLE_KINDS}")
    return Example(list(context), list(target), kind)


def example_stream(
    task: ArithConfig | CountdownConfig, tokenizer: PreTrainedTokenizerBase, seed: int, mix: Sequence[float]
) -> Iterator[Example]:
    """Endless seeded stream of training examples on the train side of the task."""
    rng = random.Random(f"warmstart-examples:{seed}")
    if isinstance(task, CountdownConfig):
        for cd_problem in countdown.iter_problems(task, seed=seed, split="train"):
            kind = rng.choices(EXAMPLE_KINDS, weights=mix)[0]
            yield make_countdown_example(cd_problem, kind, tokenizer, rng, task)
        return
    for problem in iter_problems(task, seed=seed, split="train"):
        kind = rng.choices(EXAMPLE_KINDS, weights=mix)[0]
        yield make_example(problem, kind, tokenizer, rng)


def examples_to_rows(examples: Sequence[Example], pad_id: int) -> Rows:
    """``B`` examples as one row record: ``prompt_ids`` = the contexts, ``response_ids`` /
    ``response_mask`` ``[B, T]`` = the targets right-padded (:func:`pad_responses`). There is no
    sampling: old log-probs ``[B, T]`` and rewards ``[B]`` are zeros, each row its own group."""
    responses = [e.response_ids for e in examples]
    ids, mask, old = pad_responses(responses, [[0.0] * len(r) for r in responses], pad_id)
    return Rows([list(e.prompt_ids) for e in examples], ids, mask, old, torch.zeros(len(examples)),
                list(range(len(examples))))


def batch_stream(
    examples: Iterator[Example], batch_size: int, pad_id: int, rng: random.Random, bucket: int = 8
) -> Iterator[Rows]:
    """Batches of ``batch_size`` examples as :class:`Rows`, bucketed by length to cut padding.

    Draws ``bucket * batch_size`` examples, sorts them by length, cuts them into ``bucket``
    batches and yields those in a shuffled order (deterministic given ``rng``).
    """
    while True:
        pool = sorted((next(examples) for _ in range(bucket * batch_size)), key=lambda e: len(e.input_ids))
        batches = [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(batches)
        for chunk in batches:
            yield examples_to_rows(chunk, pad_id)


def sft_loss(model: PreTrainedModel, rows: Rows, pad_id: int) -> torch.Tensor:
    """Token-mean ``−log π`` of the response tokens of ``rows`` (scalar): the trainer's forward
    (:func:`policy_forward`, log-probs ``[B, T]``) and the ``sft`` term (:data:`SFT_TERM`)."""
    log_prob, _ = policy_forward(model, rows.prompt_ids, rows.response_ids, rows.response_mask, pad_id)
    unused = torch.zeros_like(log_prob)  # sft reads neither old log-probs nor advantages
    loss, _ = term_loss(SFT_TERM, PolicyLossInputs(log_prob, unused, unused, rows.response_mask.to(log_prob.device)))
    return loss


# ----------------------------------------------------------------------------- evaluation


@dataclass
class AvgAtK:
    """Sampling accuracy on a problem set."""

    k: int
    n_problems: int
    avg_at_k: float  # mean success rate over all k samples of all problems
    pass_at_k: float  # fraction of problems with at least one success
    frac_mixed: float  # fraction of problems with success rate strictly in (0, 1)
    histogram: list[int]  # histogram[j] = number of problems with exactly j successes, j = 0..k
    move_metrics: dict[str, object] | None = None  # countdown: how the samples' first moves stand

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        if self.move_metrics is None:
            del out["move_metrics"]
        return out


def evaluate_avg_at_k(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Synthetic],
    k: int = 8,
    seed: int = 0,
    inputs: Sequence[Sequence[int]] | None = None,
    batch_size: int = 512,
) -> AvgAtK:
    """avg@k, pass@k, the mixed fraction and the success histogram of ``model`` on ``problems``,
    through the evaluation runner (:func:`skpo.evaluation.runner.evaluate`: the rollout
    engine's sampler at temperature 1, no top-p, each problem's samples seeded from ``seed`` and
    its position; the task's reward, ``arith`` or ``countdown``; budget: the longest reference
    response + 16 tokens). Countdown results carry the runner's ``move_metrics`` (how the
    samples' first moves stand).

    Args:
        inputs: per-problem prompt ids; default the plain prompt (pass skip inputs to measure
            ``[s, q]``, see :func:`draft_inputs`).
        batch_size: most (prompt, sample) rows decoded together.
    """
    was_training = model.training
    model.eval()
    try:
        if problems and isinstance(problems[0], CountdownProblem):
            spec, records = get_spec("countdown"), countdown_records(problems)  # type: ignore[arg-type]
        else:
            spec, records = get_spec("arith"), arith_records(problems)  # type: ignore[arg-type]
        result = evaluate(model, tokenizer, spec, EvalSettings(k=k, seed=seed, batch_size=batch_size), problems=records,
                          prompt_ids=inputs)
    finally:
        model.train(was_training)
    n, hist = result["n_problems"], result["success_histogram"]
    return AvgAtK(k=k, n_problems=n, avg_at_k=result["metrics"][f"avg@{k}"], pass_at_k=result["metrics"][f"pass@{k}"],
                  frac_mixed=sum(hist[1:k]) / n, histogram=hist, move_metrics=result.get("move_metrics"))


def draft_inputs(
    tokenizer: PreTrainedTokenizerBase, problems: Sequence[Synthetic], flawed: bool, seed: int = 0,
    task: CountdownConfig | None = None,
) -> list[list[int]]:
    """Skip inputs ``[s, q]`` whose draft is the first half of the lines of a solution.

    The draft holds ``max(1, n_ops // 2)`` full equation lines (each ending in a newline) of the
    reference solution, or — with ``flawed`` — of a flawed solution whose first line is wrong.
    Countdown: ``max(1, moves // 2)`` move lines of the reference solution, or of a solution
    whose first move is a dead end (``task``'s operators; the reference when there is none).
    Returns ``[N][L_s + L_q]`` token ids, built with the same template helpers as training.
    """
    rng = random.Random(f"draft-inputs:{seed}")
    rows = []
    for p in problems:
        if isinstance(p, CountdownProblem):
            n_lines = max(1, len(p.moves) // 2)
            bad = countdown.flawed_solution(p, task or CountdownConfig(), rng) if flawed else None
            text = bad.text if bad is not None else countdown.solution_text(p)
            draft = "\n".join(text.split("\n")[:n_lines]) + "\n"
            rows.append(skip_input_ids(tokenizer.encode(draft, add_special_tokens=False), plain_input_ids(tokenizer, p)))
            continue
        n_lines = max(1, p.n_ops // 2)
        text = flawed_solution(p, rng, error_step=0).text if flawed else solution_text(p)
        draft = "\n".join(text.split("\n")[:n_lines]) + "\n"
        rows.append(skip_input_ids(tokenizer.encode(draft, add_special_tokens=False), plain_input_ids(tokenizer, p)))
    return rows


def evaluate_all(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problems: Sequence[Synthetic], k: int = 8, seed: int = 0,
    task: CountdownConfig | None = None,
) -> dict[str, Any]:
    """avg@k on plain inputs and on skip inputs with a correct and a flawed draft."""
    return {
        "plain": evaluate_avg_at_k(model, tokenizer, problems, k=k, seed=seed).to_dict(),
        "skip_correct_draft": evaluate_avg_at_k(
            model, tokenizer, problems, k=k, seed=seed, inputs=draft_inputs(tokenizer, problems, flawed=False, task=task)
        ).to_dict(),
        "skip_flawed_draft": evaluate_avg_at_k(
            model, tokenizer, problems, k=k, seed=seed, inputs=draft_inputs(tokenizer, problems, flawed=True, task=task)
        ).to_dict(),
    }


# ----------------------------------------------------------------------------- training


@dataclass
class WarmstartResult:
    """What :func:`train` returns."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    steps: int
    seconds: float
    losses: list[float]  # per step
    validation: list[dict[str, float]]  # one record per check: step, avg_at_k, pass_at_k, frac_mixed
    reached_target: bool


def set_determinism(seed: int, threads: int) -> None:
    """Seed python and torch, fix the thread count, and ask torch for deterministic kernels."""
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    # NaN-filling every fresh tensor (on by default in deterministic mode) made CPU steps several
    # times slower here and changes no result; the deterministic kernels themselves are kept.
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]  # (a module setting torch's stubs leave out)


def validation_problems(task: ArithConfig | CountdownConfig, n: int, seed: int) -> list[Synthetic]:
    """``n`` train-side problems from a stream of their own, for the stopping rule.

    Train side on purpose: the held-out (eval-side) set stays untouched by model selection.
    """
    rng = random.Random(f"warmstart-validation:{seed}")
    if isinstance(task, CountdownConfig):
        cd: list[Synthetic] = []
        while len(cd) < n:
            problem: Synthetic = countdown.sample_problem(task, rng)
            if countdown.split_of(problem.question, task.eval_buckets) == "train":
                cd.append(problem)
        return cd
    out: list[Synthetic] = []
    while len(out) < n:
        problem = sample_problem(task, rng)
        if split_of(problem.question, task.eval_buckets) == "train":
            out.append(problem)
    return out


def load_init(path: str, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A saved model to continue training from (e.g. the shipped ``tiny-arith`` for a
    longer-chain curriculum), float32. Refused when its vocabulary or special ids differ from the
    task tokenizer's: the warm start builds every sequence with that tokenizer."""
    model = load_policy(shipped_model_dir(path) or path, dtype=torch.float32)
    vocab = cast(torch.nn.Embedding, model.get_input_embeddings()).weight.shape[0]  # (a causal LM's token embedding)
    if vocab != len(tokenizer) or model.config.eos_token_id != tokenizer.eos_token_id:
        raise ValueError(
            f"--init {path}: vocabulary {vocab} / eos {model.config.eos_token_id} does not match the arithmetic "
            f"tokenizer's {len(tokenizer)} / {tokenizer.eos_token_id}; the warm start continues only models made by it"
        )
    return model


def schedule_axis(config: WarmstartConfig) -> tuple[int, int]:
    """``(total, warmup)`` steps of the schedule: the step cap and ``min(warmup_steps, cap // 2)``;
    with ``--minutes`` alone, :data:`MINUTES_AXIS_STEPS` and 5 % of it."""
    if config.steps:
        return config.steps, min(config.warmup_steps, config.steps // 2)
    return MINUTES_AXIS_STEPS, MINUTES_AXIS_STEPS // 20


def train(config: WarmstartConfig, log_every: int = 100, log: Callable[[str], None] = print) -> WarmstartResult:
    """Run the warm start (no held-out evaluation, no saving).

    The learning rate is ``lr · lr_factor(position, total, warmup, "cosine", min_lr_ratio)``
    with ``position = max(step, elapsed / minutes · total)`` on the axis of
    :func:`schedule_axis`. The run stops when the position reaches ``total`` or, with
    ``target_avg`` set, at the first check (every ``check_every`` steps) where plain
    avg@``val_k`` on ``val_problems`` validation problems reaches ``target_avg``.

    Why the target: accuracy of the tiny model jumps within a few hundred steps once it learns
    carrying (e.g. 10 % → 80 % plain avg@8), and where that jump happens depends on the seed and
    schedule. A fixed step count would land on either side of it; stopping at a validation
    target lands in the middle, where RL has the most signal, whatever the seed.
    """
    set_determinism(config.seed, config.threads)
    tokenizer = build_tokenizer(model_max_length=config.model.max_position_embeddings)
    pad_id = tokenizer.pad_token_id
    model = build_tiny_model(tokenizer, config.model, seed=config.seed) if config.init is None else load_init(config.init, tokenizer)
    model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.98),
    )
    batches = batch_stream(
        example_stream(config.task, tokenizer, config.seed, config.mix),
        config.batch_size,
        pad_id,
        random.Random(f"warmstart-batches:{config.seed}"),
    )
    val = validation_problems(config.task, config.val_problems, config.seed) if config.target_avg is not None else []
    budget_s = None if config.minutes is None else 60.0 * config.minutes
    total, warmup = schedule_axis(config)
    log(f"warmstart: {count_parameters(model):,} parameters, batch {config.batch_size}, steps {config.steps}, "
        f"minutes {config.minutes}, target avg@{config.val_k} {config.target_avg}, seed {config.seed}")

    losses: list[float] = []
    validation: list[dict[str, float]] = []
    reached = False
    start = time.perf_counter()
    step = 0
    while not reached:
        position = max(float(step), (time.perf_counter() - start) / budget_s * total if budget_s else 0.0)
        if position >= total:
            break
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(position, total, warmup, "cosine", config.min_lr_ratio)
        loss = sft_loss(model, next(batches), pad_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        step += 1
        if log_every and step % log_every == 0:
            recent = sum(losses[-log_every:]) / len(losses[-log_every:])
            log(f"step {step:5d}  loss {recent:.4f}  lr {optimizer.param_groups[0]['lr']:.2e}  "
                f"{time.perf_counter() - start:6.1f}s")
        if val and config.check_every and step % config.check_every == 0:
            m = evaluate_avg_at_k(model, tokenizer, val, k=config.val_k, seed=config.seed)
            validation.append({"step": step, "avg_at_k": m.avg_at_k, "pass_at_k": m.pass_at_k, "frac_mixed": m.frac_mixed})
            log(f"step {step:5d}  validation avg@{config.val_k} {m.avg_at_k:.3f}  pass@{config.val_k} "
                f"{m.pass_at_k:.3f}  mixed {m.frac_mixed:.3f}")
            assert config.target_avg is not None  # (val is empty without it)
            reached = m.avg_at_k >= config.target_avg
    model.eval()
    return WarmstartResult(model, tokenizer, step, time.perf_counter() - start, losses, validation, reached)


def save(result: WarmstartResult, config: WarmstartConfig, out: Path, metrics: dict[str, object]) -> None:
    """Write model (safetensors), tokenizer and ``warmstart.json`` to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    result.model.save_pretrained(out, safe_serialization=True)
    result.tokenizer.save_pretrained(out)
    record = {
        **({"task_name": "countdown"} if isinstance(config.task, CountdownConfig) else {}),
        "config": asdict(config),
        "seed": config.seed,
        "steps": result.steps,
        "reached_target": result.reached_target,
        "train_seconds": round(result.seconds, 1),
        "parameters": count_parameters(result.model),
        "final_loss": sum(result.losses[-50:]) / max(1, len(result.losses[-50:])),
        "metrics": metrics,
        "validation": result.validation,
        "losses": [round(x, 4) for x in result.losses],  # per step
    }
    (out / "warmstart.json").write_text(json.dumps(record, indent=2) + "\n")

