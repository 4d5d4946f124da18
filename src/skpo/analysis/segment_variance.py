"""How much does SKPO's upstream segment decide the outcome? A variance decomposition.

SKPO's premise is that early tokens decide whether an answer ends right, so a reward for the
segment (its Monte Carlo value) carries signal an outcome reward spreads thin. This analysis
measures how much of the outcome's variance the segment explains, for a fixed model (a warm
start), the same way on every embedded task, so tasks can be put side by side.

Procedure, per held-out problem ``q`` (``P`` problems):

1. ``G`` plain answers from ``q``: the problem's accuracy and its mean answer length ``L_q``
   (SKPO's length tracker after one observation).
2. ``M`` segments cut as SKPO cuts its candidates: each gets its own split point
   ``t ~ UniformInt[⌈L_q/6⌉, ⌊L_q/2⌋]``, is sampled from ``q`` up to ``t`` tokens, and an answer
   that stops before ``t`` is cut at half its length
   (:func:`skpo.rollout.skpo_rollout.cut_segment`).
3. ``K`` answers after each segment, in each conditioning:
   ``continual`` — the model continues ``q + s`` (scored as ``s + c``): the segment's value as
   the start of the answer, i.e. **how much the first tokens decide the outcome**;
   ``skip`` — the model answers ``[s, q]`` afresh (scored on its answer): SKPO's upstream Monte
   Carlo reward, i.e. **how much of that the upstream reward can see** through the skip input.
4. Per problem and conditioning, the 0/1 rewards ``r[m, k]`` are split one-way (segments as
   groups): the within-segment variance ``W`` (mean over segments of the Bessel variance of
   the ``K`` rewards) and the between-segment variance of the segment means ``S²``; the
   between-segment component is ``B = S² − W / K`` (an unbiased estimate of the variance of
   the segment's value ``V(s)``; it can be negative by chance). The total outcome variance of
   the problem is estimated by ``B + W``.
5. **The share explained by the segment**, pooled over problems: ``Σ_q B_q / Σ_q (B_q + W_q)``
   (problems whose answers are all right or all wrong add nothing to either sum), with a 95 %
   percentile bootstrap interval over problems. Also reported: the uncorrected share
   ``Σ S² / Σ (S² + W)`` and the mean of the per-problem shares over problems with variance.

Readings picked here:

- the ``M`` segments are SKPO's **candidates** (before its median-NLL selection keeps one):
  the decomposition is over the distribution SKPO draws segments from;
- one split point per segment, not one per prompt (SKPO draws ``t_q`` once per prompt and
  step): over many steps a prompt sees every split point, and per-segment points give that
  spread in one pass;
- ``L_q`` is the measured mean answer length of the ``G`` plain answers (SKPO's tracker after
  its first update), and the answer budget is the task's (reference length + 16 tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from skpo.algorithms.trackers import LengthTracker
from skpo.analysis.mc_accuracy import ArithSampler, Log, bootstrap_ci, stopwatch
from skpo.engines.engine import mix_seed
from skpo.rollout.skpo_rollout import cut_segment
from skpo.tasks.templates import continual_input_ids, skip_input_ids

__all__ = ["CONDITIONINGS", "SegmentVarianceSettings", "analyse", "collect", "plot", "run", "variance_components"]

CONDITIONINGS = ("continual", "skip")


# ---------------------------------------------------------------------- pure functions


def variance_components(rewards: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One-way variance components of rewards grouped by segment.

    Args:
        rewards: ``[P, M, K]`` — problem, segment, answer after the segment (``M, K >= 2``).

    Returns:
        ``(between, within, spread)``, each ``[P]`` float64: ``within`` = mean over segments of
        the Bessel variance of the ``K`` rewards; ``spread`` = the Bessel variance of the ``M``
        segment means; ``between = spread − within / K`` (unbiased for the variance of the
        segment's value).
    """
    if rewards.ndim != 3 or rewards.shape[1] < 2 or rewards.shape[2] < 2:
        raise ValueError(f"need rewards [P, M >= 2, K >= 2], got {tuple(rewards.shape)}")
    r = rewards.double()
    k = r.shape[2]
    within = r.var(-1, unbiased=True).mean(-1)  # [P]
    spread = r.mean(-1).var(-1, unbiased=True)  # [P]
    return spread - within / k, within, spread


def pooled_share(between: Tensor, within: Tensor) -> float | None:
    """``Σ between / Σ (between + within)``; ``None`` when the denominator is not positive."""
    den = float((between + within).sum())
    return None if den <= 0 else float(between.sum()) / den


def share_summary(rewards: Tensor, reps: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The pooled share (with its bootstrap interval over problems), the uncorrected share and
    the mean per-problem share of ``rewards`` ``[P, M, K]`` (module doc, step 5)."""
    between, within, spread = variance_components(rewards)
    total = between + within
    has_var = total > 0
    per_problem = (between[has_var] / total[has_var]).clamp(-1.0, 1.0)
    raw_den = float((spread + within).sum())
    return {
        "share": pooled_share(between, within),
        "share_ci95": bootstrap_ci(lambda idx: pooled_share(between[idx], within[idx]), between.numel(),
                                   reps=reps, seed=seed),
        "share_uncorrected": None if raw_den <= 0 else float(spread.sum()) / raw_den,
        "mean_problem_share": float(per_problem.mean()) if per_problem.numel() else None,
        "problems_with_variance": int(has_var.sum()),
        "between": float(between.mean()),
        "within": float(within.mean()),
        "accuracy": float(rewards.double().mean()),
    }


# ---------------------------------------------------------------------- settings + generation


@dataclass(frozen=True)
class SegmentVarianceSettings:
    """Settings of ``skpo analyze segment-variance`` (defaults: a few minutes per model on 2 cores)."""

    problems: int = 128
    group_size: int = 8  # G plain answers per problem (accuracy, L_q)
    segments: int = 8  # M candidate segments per problem
    answers: int = 8  # K answers after each segment, per conditioning
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = 512
    bootstrap: int = 2000

    def __post_init__(self) -> None:
        if self.problems < 2 or self.segments < 2 or self.answers < 2 or self.group_size < 1:
            raise ValueError("need problems, segments and answers >= 2 and group_size >= 1")

    @classmethod
    def quick(cls, seed: int = 0) -> SegmentVarianceSettings:
        """A few-second setting for the test suite (same code path)."""
        return cls(problems=3, group_size=2, segments=2, answers=2, seed=seed, bootstrap=50)


def collect(model: Any, tokenizer: Any, problems: Sequence[Any], settings: SegmentVarianceSettings,
            log: Log | None = None) -> dict[str, Any]:
    """Plain answers, segments and the rewards after each segment in each conditioning.

    Returns ``plain`` ``[P, G]``, ``rewards`` (conditioning → ``[P, M, K]``) float64 0/1,
    ``segments`` ``[P][M]`` token lists, ``lengths`` ``[P]``, ``timings`` and ``decoded_tokens``."""
    log = log or (lambda _msg: None)
    s = settings
    sampler = ArithSampler.build(model, tokenizer, s.batch_size)
    P, G, M, K = len(problems), s.group_size, s.segments, s.answers
    prompts = [sampler.prompt(p) for p in problems]
    budgets = [sampler.budget(p) for p in problems]
    timings: dict[str, float] = {}

    clock = stopwatch()
    plain = sampler.generate(prompts, G, budgets, [mix_seed(s.seed, 1, p) for p in range(P)], s.temperature)
    plain_r = torch.tensor([[float(sampler.correct(problems[p], c.token_ids)) for c in plain[p]] for p in range(P)],
                           dtype=torch.float64)
    lengths = [sum(len(c) for c in row) / G for row in plain]
    tracker = LengthTracker(initial=32.0)
    tracker.update(list(range(P)), lengths, kls=[0.0] * P)  # first observation: L_q := the mean length
    timings["plain"] = clock()
    log(f"plain: {P}×{G}, accuracy {float(plain_r.mean()):.3f}, mean length {sum(lengths) / P:.1f} tokens")

    clock = stopwatch()
    generator = torch.Generator().manual_seed(s.seed)
    keys = [p for p in range(P) for _ in range(M)]
    split = tracker.sample_split(keys, generator)  # [P·M]
    seg_in = [prompts[p] for p in keys]
    raw = sampler.generate(seg_in, 1, split, [mix_seed(s.seed, 2, p, m) for p in range(P) for m in range(M)],
                           s.temperature)
    segments = [cut_segment(row[0])[0] for row in raw]  # [P·M]
    timings["segments"] = clock()

    rewards: dict[str, Tensor] = {}
    decoded = sum(len(c) for row in plain for c in row) + sum(len(row[0]) for row in raw)
    for tag, kind in enumerate(CONDITIONINGS, start=3):
        clock = stopwatch()
        if kind == "continual":
            inputs = [continual_input_ids(prompts[p], seg) for p, seg in zip(keys, segments)]
            budget = [budgets[p] - len(seg) for p, seg in zip(keys, segments)]
            prefix = segments
        else:
            inputs = [skip_input_ids(seg, prompts[p]) for p, seg in zip(keys, segments)]
            budget = [budgets[p] for p in keys]
            prefix = [[] for _ in keys]
        outs = sampler.generate(inputs, K, budget, [mix_seed(s.seed, tag, i) for i in range(P * M)], s.temperature)
        rewards[kind] = torch.tensor(
            [[float(sampler.correct(problems[keys[i]], list(prefix[i]) + c.token_ids)) for c in row]
             for i, row in enumerate(outs)], dtype=torch.float64).reshape(P, M, K)
        decoded += sum(len(c) for row in outs for c in row)
        timings[kind] = clock()
        log(f"{kind}: {P * M} segments × {K} answers, accuracy {float(rewards[kind].mean()):.3f} "
            f"({timings[kind]:.1f} s)")
    return {"plain": plain_r, "rewards": rewards, "segments": [segments[p * M:(p + 1) * M] for p in range(P)],
            "split_points": split, "lengths": lengths, "timings": timings, "decoded_tokens": decoded}


def analyse(data: dict[str, Any], settings: SegmentVarianceSettings) -> dict[str, Any]:
    """The numbers of the analysis from collected data (pure)."""
    seg_lens = [len(seg) for row in data["segments"] for seg in row]
    out: dict[str, Any] = {
        "n_problems": len(data["lengths"]),
        "plain_accuracy": float(data["plain"].mean()),
        "mean_answer_tokens": sum(data["lengths"]) / len(data["lengths"]),
        "mean_segment_tokens": sum(seg_lens) / len(seg_lens),
        "mean_segment_fraction": sum(n / max(1e-9, data["lengths"][i // settings.segments])
                                     for i, n in enumerate(seg_lens)) / len(seg_lens),
    }
    for kind in CONDITIONINGS:
        out[kind] = share_summary(data["rewards"][kind], settings.bootstrap, settings.seed)
    return out


def run(model: Any, tokenizer: Any, problems: Sequence[Any], settings: SegmentVarianceSettings,
        log: Log | None = None) -> dict[str, Any]:
    """:func:`collect` then :func:`analyse`; adds ``timings``, ``decoded_tokens`` and ``settings``."""
    data = collect(model, tokenizer, problems, settings, log)
    out = analyse(data, settings)
    out["timings"] = {k: round(v, 2) for k, v in data["timings"].items()}
    out["decoded_tokens"] = data["decoded_tokens"]
    out["settings"] = asdict(settings)
    return out


def plot(results: dict[str, Any], path: str | Path, dpi: int = 120) -> Path:
    """The pooled share with its interval, per model and conditioning (bars); saved as PNG.

    ``results``: one :func:`run` result, or ``{"models": {label: result, ...}}``."""
    import matplotlib  # heavy: loaded when a figure is drawn

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    models = results.get("models") or {"model": results}
    fig = Figure(figsize=(3.2 + 2.6 * len(models), 4.2), layout="constrained")
    ax = fig.subplots()
    width = 0.38
    for j, kind in enumerate(CONDITIONINGS):
        xs, ys, lo, hi = [], [], [], []
        for i, (_label, r) in enumerate(models.items()):
            row = r[kind]
            share = math.nan if row["share"] is None else row["share"]
            ci = row["share_ci95"] or [share, share]
            xs.append(i + (j - 0.5) * width)
            ys.append(share)
            lo.append(share - ci[0])
            hi.append(ci[1] - share)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=4,
               label={"continual": "continual q + s: the segment's value",
                      "skip": "skip [s, q]: SKPO's upstream reward"}[kind])
    ax.set_xticks(range(len(models)), list(models))
    ax.set_ylabel("share of outcome variance")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_title("explained by the upstream segment (95 % bootstrap over problems)", fontsize="medium")
    ax.legend(fontsize="small")
    ax.grid(True, axis="y", alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
