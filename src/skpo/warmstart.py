"""``skpo warmstart``: supervised warm start of the tiny Qwen2 model on chained arithmetic.

Trains :func:`skpo.models.tiny.build_tiny_model` from scratch on generated reference solutions
so that RL starts from a policy that solves a fair share, but far from all, of the default
problems. The shipped checkpoint ``skpo/assets/tiny-arith`` is the output of the command in
``docs/embedded-default.md``.

Training data (an endless seeded stream of train-side problems, :func:`make_example`):

- ``plain``: ``q`` → reference solution;
- ``skip_correct``: ``[s, q]`` with ``s`` a prefix of the *reference* solution → reference solution;
- ``skip_flawed``: ``[s, q]`` with ``s`` a prefix of a *flawed* solution (one early wrong
  result, carried forward), cut at or after the end of the wrong line → still the *correct* reference solution,
  so the model learns that ``[s, q]`` asks for a fresh answer computed from ``q``.

The loss is the token-mean cross-entropy on response tokens only (solution + EOS); question
and draft tokens are context, never targets (in an earlier probe, putting the loss on the
random question digits left the tiny model near 0 %).

When to stop: accuracy jumps within a few hundred steps once the model learns carrying, and
where that happens moves with seed and schedule, so a fixed step count lands either near 10 %
or near 90 %. By default the run therefore stops at the first check (every 50 steps) where plain
avg@8 on 64 *validation* problems (train side, own seed stream) reaches 0.3, with 2000 steps
as the cap; the held-out set is only used for the report.

Reproducibility: python and torch RNGs seeded, ``torch.use_deterministic_algorithms(True)``,
a fixed thread count (2 by default). Without ``--minutes`` the run (including where the
target stops it) is bit-reproducible on one machine; ``--minutes`` stops on wall-clock and is
not. Another CPU may round differently and stop at another check.

Evaluation (:func:`evaluate_avg_at_k`) samples with plain ``model.generate`` (batched, left
padding, temperature 1, no top-k/top-p) and scores with :func:`skpo.rewards.arith.check_answer`
— a small self-contained evaluator, not the project's rollout engine.

Simplifications: AdamW with linear warm-up and cosine decay over the step cap (a run stopped
by the target ends at a high learning rate, not annealed); batches bucketed by length and
right-padded, no sequence packing.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from skpo.models.tiny import TinyConfig, build_tiny_model, count_parameters
from skpo.models.tokenizer import build_tokenizer
from skpo.rewards.arith import check_answer
from skpo.tasks.arith import (
    ArithConfig,
    ArithProblem,
    flawed_solution,
    heldout_problems,
    iter_problems,
    sample_problem,
    solution_text,
    split_of,
)
from skpo.tasks.templates import plain_input_ids, response_ids, skip_input_ids

EXAMPLE_KINDS: tuple[str, ...] = ("plain", "skip_correct", "skip_flawed")


@dataclass
class WarmstartConfig:
    """Everything that determines a warm-start run (saved in ``warmstart.json``)."""

    seed: int = 0
    steps: int | None = 2000
    minutes: float | None = None
    batch_size: int = 64
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    mix: tuple[float, float, float] = (0.5, 0.25, 0.25)  # plain, skip_correct, skip_flawed
    target_avg: float | None = 0.3  # stop at the first check with validation plain avg@k >= this
    check_every: int = 50
    val_problems: int = 64
    val_k: int = 8
    threads: int = 2
    task: ArithConfig = field(default_factory=ArithConfig)
    model: TinyConfig = field(default_factory=TinyConfig)

    def __post_init__(self) -> None:
        if self.steps is None and self.minutes is None:
            raise ValueError("give steps or minutes (or both)")
        if self.target_avg is not None and not 0.0 < self.target_avg <= 1.0:
            raise ValueError(f"target_avg must be in (0, 1] or None, got {self.target_avg}")
        if len(self.mix) != 3 or min(self.mix) < 0 or sum(self.mix) <= 0:
            raise ValueError(f"mix must be three non-negative weights, got {self.mix}")


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Example:
    """One training sequence. ``input_ids``: ``[T]``; ``loss_mask``: ``[T]`` (1 on response tokens)."""

    input_ids: list[int]
    loss_mask: list[int]
    kind: str


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
    return Example(context + target, [0] * len(context) + [1] * len(target), kind)


def example_stream(
    task: ArithConfig, tokenizer: PreTrainedTokenizerBase, seed: int, mix: Sequence[float]
) -> Iterator[Example]:
    """Endless seeded stream of training examples on the train side of the task."""
    rng = random.Random(f"warmstart-examples:{seed}")
    for problem in iter_problems(task, seed=seed, split="train"):
        kind = rng.choices(EXAMPLE_KINDS, weights=mix)[0]
        yield make_example(problem, kind, tokenizer, rng)


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch. Returns ``input_ids``, ``attention_mask``, ``loss_mask``, each ``[B, T]``."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    loss = torch.zeros((len(examples), width), dtype=torch.float32)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        attn[row, :n] = 1
        loss[row, :n] = torch.tensor(e.loss_mask, dtype=torch.float32)
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": loss}


def batch_stream(
    examples: Iterator[Example], batch_size: int, pad_id: int, rng: random.Random, bucket: int = 8
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of ``batch_size`` examples, bucketed by length to cut padding.

    Draws ``bucket * batch_size`` examples, sorts them by length, cuts them into ``bucket``
    batches and yields those in a shuffled order (deterministic given ``rng``).
    """
    while True:
        pool = sorted((next(examples) for _ in range(bucket * batch_size)), key=lambda e: len(e.input_ids))
        batches = [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(batches)
        for chunk in batches:
            yield collate(chunk, pad_id)


def response_loss(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token-mean next-token cross-entropy on response tokens only (scalar).

    The batch is right-padded, so under the causal mask no real token attends to padding and no
    attention mask is passed (the fast causal attention path); padded positions carry no loss.
    """
    logits = model(input_ids=batch["input_ids"]).logits  # [B, T, V]
    targets = batch["input_ids"][:, 1:]  # [B, T-1]
    mask = batch["loss_mask"][:, 1:]  # [B, T-1]: token t+1 is a response token
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), targets, reduction="none")  # [B, T-1]
    return (nll * mask).sum() / mask.sum().clamp_min(1.0)


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

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(list(r), dtype=torch.long)
        attn[i, width - len(r) :] = 1
    return ids, attn


@torch.no_grad()
def sample_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    inputs: Sequence[Sequence[int]],
    k: int,
    temperature: float = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 512,
    seed: int = 0,
) -> list[list[str]]:
    """``k`` sampled completions (decoded, special tokens dropped) per input id list.

    Batched ``model.generate`` with left padding; ``batch_size`` counts sequences (inputs × k).
    Pure sampling: temperature only, no top-k / top-p. Returns ``[len(inputs)][k]`` strings.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    per_batch = max(1, batch_size // k)
    out: list[list[str]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(inputs), per_batch):
            out.extend(_generate_chunk(model, tokenizer, inputs[start : start + per_batch], k, temperature, max_new_tokens, device))
    model.train(was_training)
    return out


def _generate_chunk(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    chunk: Sequence[Sequence[int]],
    k: int,
    temperature: float,
    max_new_tokens: int,
    device: torch.device,
) -> list[list[str]]:
    ids, attn = _left_pad(chunk, tokenizer.pad_token_id)  # [N, W]
    generated = model.generate(
        input_ids=ids.to(device),
        attention_mask=attn.to(device),
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        num_return_sequences=k,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # [N * k, W + new], the k samples of one input adjacent
    texts = tokenizer.batch_decode(generated[:, ids.shape[1] :], skip_special_tokens=True)
    return [texts[i * k : (i + 1) * k] for i in range(len(chunk))]


def evaluate_avg_at_k(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[ArithProblem],
    k: int = 8,
    temperature: float = 1.0,
    max_new_tokens: int | None = None,
    inputs: Sequence[Sequence[int]] | None = None,
    batch_size: int = 512,
    seed: int = 0,
) -> AvgAtK:
    """avg@k, pass@k, the mixed fraction and the success histogram of ``model`` on ``problems``.

    Args:
        inputs: per-problem input ids; default the plain prompt (pass skip inputs to measure
            ``[s, q]``).
        max_new_tokens: default: the longest reference response + 16 tokens.
        seed: torch seed for sampling (same seed, same batches -> same result).
    """
    if inputs is None:
        inputs = [plain_input_ids(tokenizer, p) for p in problems]
    if max_new_tokens is None:
        max_new_tokens = max(len(response_ids(tokenizer, p)) for p in problems) + 16
    completions = sample_completions(model, tokenizer, inputs, k, temperature, max_new_tokens, batch_size, seed)
    counts = [sum(check_answer(c, p) for c in comps) for comps, p in zip(completions, problems)]
    n = len(problems)
    return AvgAtK(
        k=k,
        n_problems=n,
        avg_at_k=sum(counts) / (n * k),
        pass_at_k=sum(c > 0 for c in counts) / n,
        frac_mixed=sum(0 < c < k for c in counts) / n,
        histogram=[sum(c == j for c in counts) for j in range(k + 1)],
    )


def draft_inputs(
    tokenizer: PreTrainedTokenizerBase, problems: Sequence[ArithProblem], flawed: bool, seed: int = 0
) -> list[list[int]]:
    """Skip inputs ``[s, q]`` whose draft is the first half of the lines of a solution.

    The draft holds ``max(1, n_ops // 2)`` full equation lines (each ending in a newline) of the
    reference solution, or — with ``flawed`` — of a flawed solution whose first line is wrong.
    """
    rng = random.Random(f"draft-inputs:{seed}")
    rows = []
    for p in problems:
        n_lines = max(1, p.n_ops // 2)
        text = flawed_solution(p, rng, error_step=0).text if flawed else solution_text(p)
        draft = "\n".join(text.split("\n")[:n_lines]) + "\n"
        rows.append(skip_input_ids(tokenizer.encode(draft, add_special_tokens=False), plain_input_ids(tokenizer, p)))
    return rows


def evaluate_all(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problems: Sequence[ArithProblem], k: int = 8, seed: int = 0
) -> dict[str, dict[str, object]]:
    """avg@k on plain inputs and on skip inputs with a correct and a flawed draft."""
    return {
        "plain": evaluate_avg_at_k(model, tokenizer, problems, k=k, seed=seed).to_dict(),
        "skip_correct_draft": evaluate_avg_at_k(
            model, tokenizer, problems, k=k, seed=seed, inputs=draft_inputs(tokenizer, problems, flawed=False)
        ).to_dict(),
        "skip_flawed_draft": evaluate_avg_at_k(
            model, tokenizer, problems, k=k, seed=seed, inputs=draft_inputs(tokenizer, problems, flawed=True)
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
    torch.utils.deterministic.fill_uninitialized_memory = False


def lr_factor(progress: float, warmup_fraction: float, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio``; ``progress`` in [0, 1]."""
    if progress < warmup_fraction:
        return progress / warmup_fraction
    tail = (progress - warmup_fraction) / max(1e-8, 1.0 - warmup_fraction)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, tail)))


def validation_problems(task: ArithConfig, n: int, seed: int) -> list[ArithProblem]:
    """``n`` train-side problems from a stream of their own, for the stopping rule.

    Train side on purpose: the held-out (eval-side) set stays untouched by model selection.
    """
    rng = random.Random(f"warmstart-validation:{seed}")
    out: list[ArithProblem] = []
    while len(out) < n:
        problem = sample_problem(task, rng)
        if split_of(problem.question, task.eval_buckets) == "train":
            out.append(problem)
    return out


def train(config: WarmstartConfig, log_every: int = 100, log: Callable[[str], None] = print) -> WarmstartResult:
    """Run the warm start (no held-out evaluation, no saving).

    The learning rate follows warm-up + cosine over ``progress = max(step / steps,
    elapsed / minutes)``. The run stops when progress reaches 1 or, with ``target_avg`` set,
    at the first check (every ``check_every`` steps) where plain avg@``val_k`` on
    ``val_problems`` validation problems reaches ``target_avg``.

    Why the target: accuracy of the tiny model jumps within a few hundred steps once it learns
    carrying (e.g. 10 % → 80 % plain avg@8), and where that jump happens depends on the seed and
    schedule. A fixed step count would land on either side of it; stopping at a validation
    target lands in the middle, where RL has the most signal, whatever the seed.
    """
    set_determinism(config.seed, config.threads)
    tokenizer = build_tokenizer(model_max_length=config.model.max_position_embeddings)
    model = build_tiny_model(tokenizer, config.model, seed=config.seed)
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
        tokenizer.pad_token_id,
        random.Random(f"warmstart-batches:{config.seed}"),
    )
    val = validation_problems(config.task, config.val_problems, config.seed) if config.target_avg is not None else []
    budget_s = None if config.minutes is None else 60.0 * config.minutes
    warmup_fraction = min(0.5, config.warmup_steps / config.steps) if config.steps else 0.05
    log(f"warmstart: {count_parameters(model):,} parameters, batch {config.batch_size}, steps {config.steps}, "
        f"minutes {config.minutes}, target avg@{config.val_k} {config.target_avg}, seed {config.seed}")

    losses: list[float] = []
    validation: list[dict[str, float]] = []
    reached = False
    start = time.perf_counter()
    step = 0
    while not reached:
        elapsed = time.perf_counter() - start
        progress = max(step / config.steps if config.steps else 0.0, elapsed / budget_s if budget_s else 0.0)
        if progress >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(progress, warmup_fraction, config.min_lr_ratio)
        loss = response_loss(model, next(batches))
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
        if val and step % config.check_every == 0:
            m = evaluate_avg_at_k(model, tokenizer, val, k=config.val_k, seed=config.seed)
            model.train()
            validation.append({"step": step, "avg_at_k": m.avg_at_k, "pass_at_k": m.pass_at_k, "frac_mixed": m.frac_mixed})
            log(f"step {step:5d}  validation avg@{config.val_k} {m.avg_at_k:.3f}  pass@{config.val_k} "
                f"{m.pass_at_k:.3f}  mixed {m.frac_mixed:.3f}")
            reached = m.avg_at_k >= config.target_avg
    model.eval()
    return WarmstartResult(model, tokenizer, step, time.perf_counter() - start, losses, validation, reached)


def save(result: WarmstartResult, config: WarmstartConfig, out: Path, metrics: dict[str, object]) -> None:
    """Write model (safetensors), tokenizer and ``warmstart.json`` to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    result.model.save_pretrained(out, safe_serialization=True)
    result.tokenizer.save_pretrained(out)
    record = {
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


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    d, t = WarmstartConfig(), ArithConfig()
    p = argparse.ArgumentParser(prog="skpo warmstart", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output directory (created)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--steps", type=int, default=None,
                   help=f"most optimizer steps; the LR schedule spans them (default {d.steps} without --minutes)")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget (not bit-reproducible)")
    p.add_argument("--target-avg", type=float, default=d.target_avg,
                   help="stop once validation plain avg@k reaches this (a negative value: never)")
    p.add_argument("--check-every", type=int, default=d.check_every)
    p.add_argument("--val-problems", type=int, default=d.val_problems)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--mix", type=float, nargs=3, default=list(d.mix), metavar=("PLAIN", "SKIP_OK", "SKIP_FLAWED"))
    p.add_argument("--min-ops", type=int, default=t.min_ops)
    p.add_argument("--max-ops", type=int, default=t.max_ops)
    p.add_argument("--min-operand", type=int, default=t.min_operand)
    p.add_argument("--max-operand", type=int, default=t.max_operand)
    p.add_argument("--operators", default="".join(t.operators), help="e.g. '+-' or '+-*'")
    p.add_argument("--allow-negative", action="store_true", default=t.allow_negative)
    p.add_argument("--max-abs-result", type=int, default=t.max_abs_result)
    p.add_argument("--eval-problems", type=int, default=200, help="held-out problems (0: skip evaluation)")
    p.add_argument("--eval-k", type=int, default=8)
    p.add_argument("--log-every", type=int, default=100)
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    task = ArithConfig(
        min_ops=args.min_ops,
        max_ops=args.max_ops,
        min_operand=args.min_operand,
        max_operand=args.max_operand,
        operators=tuple(args.operators),
        allow_negative=args.allow_negative,
        max_abs_result=args.max_abs_result,
    )
    steps = args.steps if (args.steps is not None or args.minutes is not None) else WarmstartConfig.steps
    config = WarmstartConfig(
        seed=args.seed,
        steps=steps,
        minutes=args.minutes,
        target_avg=None if args.target_avg < 0 else args.target_avg,
        check_every=args.check_every,
        val_problems=args.val_problems,
        batch_size=args.batch_size,
        lr=args.lr,
        mix=tuple(args.mix),
        threads=args.threads,
        task=task,
    )
    result = train(config, log_every=args.log_every)
    print(f"trained {result.steps} steps in {result.seconds:.0f}s"
          + (f" (validation target {config.target_avg} reached)" if result.reached_target else ""))
    metrics: dict[str, object] = {}
    if args.eval_problems > 0:
        t0 = time.perf_counter()
        problems = heldout_problems(task, args.eval_problems)
        metrics = evaluate_all(result.model, result.tokenizer, problems, k=args.eval_k)
        metrics["eval_seconds"] = round(time.perf_counter() - t0, 1)
        for name in ("plain", "skip_correct_draft", "skip_flawed_draft"):
            m = metrics[name]
            print(f"{name:>20}: avg@{args.eval_k} {m['avg_at_k']:.3f}  pass@{args.eval_k} {m['pass_at_k']:.3f}  "
                  f"mixed {m['frac_mixed']:.3f}  histogram {m['histogram']}")
    save(result, config, args.out, metrics)
    print(f"saved to {args.out}")
    return 0
