"""Does the skip input avoid the shortcut? The paper's §4.1 / Fig. 3 study, on the embedded task.

``skpo analyze shortcut`` (reference ``skpo-oar-papo.md`` §1.7), on a base model (the warm
start), no RL:

1. One full response ``r`` per held-out problem, from the plain prompt ``q``.
2. Segments ``s = r[:c]`` cut at six relative positions, evenly spaced from 1/6 to 1/2 of
   ``|r|`` (tokens, EOS included): ``c = round(f·|r|)``, clamped to ``[1, |r| − 1]`` so a
   segment never holds the EOS.
3. ``G`` answers per (problem, position) under three conditionings, each with its own seeds:

   ===============  ========================  =============================================
   unconditional    ``q``                     a fresh answer ``o`` (drawn anew per position,
                                              so its line is flat up to sampling noise)
   continual        ``q + s``                 the model continues ``s``; the answer is ``s + o``
   skip             ``[s, q]`` = ``s + q``    a fresh answer ``o`` (SKPO's downstream input)
   ===============  ========================  =============================================

4. Per position and conditioning: **diversity** (mean over problems of the number of distinct
   final answers among the ``G``; a missing or unparseable ``Answer:`` line counts as one more
   value, "no answer"), **zero-advantage rate** (fraction of problems whose ``G`` answers are
   all right or all wrong: GRPO's advantage is then 0 for the whole group), **response length**
   (tokens of ``o`` only, EOS included: the conditioning prefix is not counted, so a continual
   answer's length excludes ``s``) and **accuracy**.

95% intervals are percentile bootstraps over problems, and ``minus_unconditional`` gives the
paired (same problem and position) differences continual − unconditional and skip −
unconditional with their intervals.

Extra, because every step of this task can be checked: each segment is classified by
:func:`segment_check` (error-free so far, a wrong complete line, or only its unfinished line
off the reference), and accuracy is split by that class; ``starts_with_segment`` is the
fraction of skip answers that begin by copying ``s`` token for token, and
``accuracy_copied_vs_fresh`` the skip accuracy of the answers that copy ``s`` and of those that
do not, per segment class.

Answer budgets are the reference length + 16 tokens; a continual answer keeps that budget for
``s + o``. Layout: pure functions first, then :func:`collect`, :func:`analyse`, :func:`plot`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from skpo.analysis.mc_accuracy import ArithSampler, Log, bootstrap_ratio_ci, stopwatch
from skpo.engines.engine import mix_seed
from skpo.rewards.arith import check_answer, check_steps, parse_answer
from skpo.tasks.arith import ArithProblem, solution_text
from skpo.tasks.templates import continual_input_ids, skip_input_ids

__all__ = [
    "CONDITIONINGS",
    "SegmentCheck",
    "ShortcutSettings",
    "analyse",
    "collect",
    "cut_fractions",
    "cut_length",
    "distinct_answers",
    "group_summary",
    "paired_difference",
    "plot",
    "run",
    "segment_check",
    "zero_advantage",
]

CONDITIONINGS = ("unconditional", "continual", "skip")


# ---------------------------------------------------------------------- pure functions


def cut_fractions(n: int = 6, low: float = 1 / 6, high: float = 1 / 2) -> list[float]:
    """``n`` relative cut positions evenly spaced from ``low`` to ``high`` (both included)."""
    if n == 1:
        return [low]
    return [low + (high - low) * j / (n - 1) for j in range(n)]


def cut_length(fraction: float, length: int) -> int:
    """Segment length at ``fraction`` of a ``length``-token response: ``round(f·length)``
    (halves up), clamped to ``[1, length − 1]`` (0 for a one-token response)."""
    c = int(math.floor(fraction * length + 0.5))
    return max(0, min(max(c, 1), length - 1))


def distinct_answers(answers: Sequence[Hashable | None]) -> int:
    """Number of distinct final answers in a group; ``None`` (no parseable answer) is one value."""
    return len(set(answers))


def zero_advantage(correct: Sequence[bool]) -> bool:
    """All answers right or all wrong: a group whose GRPO advantages are all 0."""
    return len({bool(c) for c in correct}) <= 1


def group_summary(
    correct: Tensor, answers: Sequence[Sequence[Hashable | None]], lengths: Tensor, units: Tensor | None = None
) -> dict[str, Any]:
    """Metrics of ``N`` groups of ``G`` answers.

    Args:
        correct: ``[N, G]`` bool.
        answers: ``[N][G]`` final answers (``None`` = none).
        lengths: ``[N, G]`` answer lengths in tokens (conditioning excluded).
        units: ``[N]`` long, the problem of each group: adds ``*_ci95`` intervals, percentile
            bootstrap over problems (:func:`~skpo.analysis.mc_accuracy.bootstrap_ratio_ci`).

    Returns ``diversity`` (mean distinct answers per group), ``zero_advantage_rate``,
    ``mean_length``, ``accuracy``, ``n_groups`` (``None`` values for ``N = 0``).
    """
    n = int(correct.shape[0])
    keys = ("diversity", "zero_advantage_rate", "mean_length", "accuracy")
    if n == 0:
        return {**dict.fromkeys(keys), "n_groups": 0}
    per_group = {
        "diversity": torch.tensor([float(distinct_answers(a)) for a in answers], dtype=torch.float64),
        "zero_advantage_rate": torch.tensor([float(zero_advantage(c.tolist())) for c in correct], dtype=torch.float64),
        "mean_length": lengths.double().mean(-1),
        "accuracy": correct.double().mean(-1),
    }  # each [N]
    out: dict[str, Any] = {k: float(v.mean()) for k, v in per_group.items()}
    out["n_groups"] = n
    if units is not None:
        u = int(units.max()) + 1
        count = torch.zeros(u, dtype=torch.float64).index_add_(0, units, torch.ones(n, dtype=torch.float64))
        for k in ("diversity", "zero_advantage_rate", "accuracy"):
            total = torch.zeros(u, dtype=torch.float64).index_add_(0, units, per_group[k])
            out[f"{k}_ci95"] = bootstrap_ratio_ci(total, count)
    return out


def paired_difference(a: Tensor, b: Tensor) -> dict[str, Any]:
    """Mean of ``a − b`` over ``[N]`` paired units (problems) and its 95% bootstrap interval."""
    d = (a.double() - b.double())
    return {"mean": float(d.mean()) if d.numel() else None,
            "ci95": bootstrap_ratio_ci(d, torch.ones_like(d))}


@dataclass(frozen=True)
class SegmentCheck:
    """Exact verdict on a segment (a prefix of an answer).

    Attributes:
        complete_lines: lines of the segment that end with a newline.
        correct_lines: how many of them are right (:func:`skpo.rewards.arith.check_steps`:
            true arithmetic on the true chain; a complete ``Answer:`` line must be right).
        error_free: the segment's text is a prefix of the reference solution: every complete
            line right *and* the unfinished last line still on the reference.
    """

    complete_lines: int
    correct_lines: int
    error_free: bool

    @property
    def complete_lines_correct(self) -> bool:
        """All complete lines right (vacuously true with none)."""
        return self.correct_lines == self.complete_lines

    @property
    def status(self) -> str:
        """``"error_free"``, ``"wrong_line"`` (a complete line is wrong) or ``"wrong_partial"``
        (complete lines right, the unfinished line already off the reference)."""
        if not self.complete_lines_correct:
            return "wrong_line"
        return "error_free" if self.error_free else "wrong_partial"


def segment_check(text: str, problem: ArithProblem) -> SegmentCheck:
    """Classify a segment's text against ``problem`` (see :class:`SegmentCheck`).

    Complete lines are those followed by a newline; equation lines are checked with
    :func:`~skpo.rewards.arith.check_steps`, a complete ``Answer:`` line with
    :func:`~skpo.rewards.arith.check_answer`, and any line after it is wrong."""
    complete = text.split("\n")[:-1]
    answer_at = next((k for k, line in enumerate(complete) if line.lstrip().startswith("Answer:")), None)
    equations = complete if answer_at is None else complete[:answer_at]
    correct = sum(check_steps("\n".join(equations), problem).correct) if equations else 0
    if answer_at is not None:
        correct += int(check_answer(complete[answer_at], problem))
    return SegmentCheck(len(complete), correct, solution_text(problem).startswith(text))


# ---------------------------------------------------------------------- settings + generation


@dataclass(frozen=True)
class ShortcutSettings:
    """Settings of ``skpo analyze shortcut`` (defaults: about 2 minutes on 2 CPU cores)."""

    problems: int = 200
    group_size: int = 8
    positions: int = 6
    low: float = 1 / 6
    high: float = 1 / 2
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = 512

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError("group_size must be >= 2")
        if self.positions < 1 or not 0.0 < self.low <= self.high < 1.0:
            raise ValueError("need positions >= 1 and 0 < low <= high < 1")

    @classmethod
    def quick(cls, seed: int = 0) -> ShortcutSettings:
        return cls(problems=3, group_size=4, seed=seed)


def collect(
    model: Any, tokenizer: Any, problems: Sequence[ArithProblem], settings: ShortcutSettings, log: Log | None = None
) -> dict[str, Any]:
    """Sample the base responses and the ``G`` answers of every (problem, position, conditioning).

    Returns a dict with ``responses`` ``[P]``, ``cuts`` ``[P][J]``, ``segments`` ``[P][J]`` and,
    per conditioning, ``answers`` ``[P·J][G]`` token lists (``o``, the decoded part), in
    problem-major order, plus ``timings`` and ``decoded_tokens``."""
    log = log or (lambda _msg: None)
    s = settings
    sampler = ArithSampler.build(model, tokenizer, s.batch_size)
    P, G = len(problems), s.group_size
    fractions = cut_fractions(s.positions, s.low, s.high)
    prompts = [sampler.prompt(p) for p in problems]
    budgets = [sampler.budget(p) for p in problems]
    timings: dict[str, float] = {}

    clock = stopwatch()
    base = sampler.generate(prompts, 1, budgets, [mix_seed(s.seed, 1, p) for p in range(P)], s.temperature)
    responses = [list(row[0].token_ids) for row in base]
    cuts = [[cut_length(f, len(r)) for f in fractions] for r in responses]
    segments = [[r[:c] for c in cs] for r, cs in zip(responses, cuts)]
    timings["responses"] = clock()
    decoded = sum(len(r) for r in responses)

    rows = [(p, j) for p in range(P) for j in range(len(fractions))]
    inputs = {
        "unconditional": [prompts[p] for p, _ in rows],
        "continual": [continual_input_ids(prompts[p], segments[p][j]) for p, j in rows],
        "skip": [skip_input_ids(segments[p][j], prompts[p]) for p, j in rows],
    }
    row_budgets = {
        "unconditional": [budgets[p] for p, _ in rows],
        "continual": [budgets[p] - len(segments[p][j]) for p, j in rows],
        "skip": [budgets[p] for p, _ in rows],
    }
    answers: dict[str, list[list[list[int]]]] = {}
    for tag, name in enumerate(CONDITIONINGS, start=2):
        clock = stopwatch()
        seeds = [mix_seed(s.seed, tag, p, j) for p, j in rows]
        outs = sampler.generate(inputs[name], G, row_budgets[name], seeds, s.temperature)
        answers[name] = [[list(c.token_ids) for c in row] for row in outs]
        decoded += sum(len(a) for row in answers[name] for a in row)
        timings[name] = clock()
        log(f"{name}: {len(rows)} groups × {G} answers ({timings[name]:.1f} s)")
    return {"fractions": fractions, "responses": responses, "cuts": cuts, "segments": segments, "rows": rows,
            "answers": answers, "timings": timings, "decoded_tokens": decoded, "sampler": sampler}


def analyse(data: dict[str, Any], problems: Sequence[ArithProblem], settings: ShortcutSettings) -> dict[str, Any]:
    """The tables of the study from :func:`collect`'s samples."""
    sampler: ArithSampler = data["sampler"]
    fractions, rows, segments = data["fractions"], data["rows"], data["segments"]
    J = len(fractions)
    seg_checks = [[segment_check(sampler.text(seg), problems[p]) for seg in segments[p]] for p in range(len(problems))]
    status = [seg_checks[p][j].status for p, j in rows]

    problem = torch.tensor([p for p, _ in rows], dtype=torch.long)  # [P·J]
    per: dict[str, dict[str, Any]] = {}
    group_values: dict[str, dict[str, Tensor]] = {}
    for name in CONDITIONINGS:
        prefix = (lambda p, j: segments[p][j]) if name == "continual" else (lambda p, j: [])
        full = [[prefix(p, j) + o for o in group] for (p, j), group in zip(rows, data["answers"][name])]
        texts = [[sampler.text(a) for a in group] for group in full]
        correct = torch.tensor(
            [[sampler.correct(problems[p], a) for a in group] for (p, _), group in zip(rows, full)], dtype=torch.bool
        ).reshape(len(rows), -1)
        finals = [[parse_answer(t) for t in group] for group in texts]
        lengths = torch.tensor(
            [[len(o) for o in group] for group in data["answers"][name]], dtype=torch.float64
        ).reshape(len(rows), -1)  # [P·J, G]
        by_pos = []
        for j in range(J):
            idx = [n for n, (_, jj) in enumerate(rows) if jj == j]
            by_pos.append(group_summary(correct[idx], [finals[n] for n in idx], lengths[idx], problem[idx]))
        by_status = {}
        for st in ("error_free", "wrong_partial", "wrong_line"):
            idx = [n for n in range(len(rows)) if status[n] == st]
            by_status[st] = group_summary(correct[idx], [finals[n] for n in idx], lengths[idx], problem[idx])
        per[name] = {"by_position": by_pos, "all": group_summary(correct, finals, lengths, problem),
                     "by_segment_status": by_status}
        group_values[name] = {
            "diversity": torch.tensor([float(distinct_answers(f)) for f in finals], dtype=torch.float64),
            "zero_advantage_rate": torch.tensor(
                [float(zero_advantage(c.tolist())) for c in correct], dtype=torch.float64
            ),
            "accuracy": correct.double().mean(-1),
        }  # each [P·J], problem-major
        if name == "skip":
            copies = torch.tensor([[o[: len(segments[p][j])] == segments[p][j] for o in group]
                                   for (p, j), group in zip(rows, data["answers"][name])], dtype=torch.bool)  # [N, G]
            per[name]["starts_with_segment"] = {"all": float(copies.double().mean())}
            per[name]["accuracy_copied_vs_fresh"] = {}
            for st in ("error_free", "wrong_partial", "wrong_line"):
                idx = [n for n in range(len(rows)) if status[n] == st]
                cp, ok = copies[idx], correct[idx]
                per[name]["starts_with_segment"][st] = float(cp.double().mean()) if idx else None
                per[name]["accuracy_copied_vs_fresh"][st] = {
                    "copied": float(ok[cp].double().mean()) if bool(cp.any()) else None,
                    "fresh": float(ok[~cp].double().mean()) if bool((~cp).any()) else None,
                }

    # Paired by problem: (continual or skip) − unconditional, per position and pooled.
    P = len(problems)
    differences: dict[str, Any] = {}
    for name in ("continual", "skip"):
        differences[name] = {}
        for metric in ("diversity", "zero_advantage_rate", "accuracy"):
            diff = (group_values[name][metric] - group_values["unconditional"][metric]).reshape(P, J)  # [P, J]
            differences[name][metric] = {
                "by_position": [paired_difference(diff[:, j], torch.zeros(P)) for j in range(J)],
                "all": paired_difference(diff.mean(-1), torch.zeros(P)),
            }

    seg_by_pos = []
    for j in range(J):
        checks = [seg_checks[p][j] for p in range(len(problems))]
        seg_by_pos.append({
            "fraction": fractions[j],
            "mean_segment_tokens": sum(len(segments[p][j]) for p in range(len(problems))) / len(problems),
            **{st: sum(c.status == st for c in checks) / len(checks)
               for st in ("error_free", "wrong_partial", "wrong_line")},
        })
    base_correct = [sampler.correct(problems[p], r) for p, r in enumerate(data["responses"])]
    return {
        "n_problems": len(problems),
        "group_size": settings.group_size,
        "fractions": fractions,
        "base_response_accuracy": sum(base_correct) / len(base_correct),
        "mean_base_response_tokens": sum(len(r) for r in data["responses"]) / len(data["responses"]),
        "segments": seg_by_pos,
        "conditionings": per,
        "minus_unconditional": differences,
        "examples": [
            {"question": problems[p].question, "response": sampler.text(data["responses"][p]),
             "segments": [sampler.text(sg) for sg in segments[p]], "status": [c.status for c in seg_checks[p]]}
            for p in range(min(5, len(problems)))
        ],
    }


def run(
    model: Any, tokenizer: Any, problems: Sequence[ArithProblem], settings: ShortcutSettings, log: Log | None = None
) -> dict[str, Any]:
    """:func:`collect` then :func:`analyse`; adds ``timings``, ``decoded_tokens``, ``settings``."""
    data = collect(model, tokenizer, problems, settings, log)
    clock = stopwatch()
    out = analyse(data, problems, settings)
    data["timings"]["analysis"] = clock()
    out["timings"] = {k: round(v, 2) for k, v in data["timings"].items()}
    out["decoded_tokens"] = data["decoded_tokens"]
    out["settings"] = asdict(settings)
    return out


_COLOURS = {"unconditional": "C0", "continual": "C3", "skip": "C2"}
_LABELS = {"unconditional": "unconditional q", "continual": "continual q + s", "skip": "skip [s, q]"}


def plot(result: dict[str, Any], path: str | Path, dpi: int = 120) -> Path:
    """Four panels vs cut position (diversity, zero-advantage rate, length, accuracy), one line
    per conditioning with its 95% bootstrap band; saved as PNG."""
    import matplotlib  # heavy: loaded when a figure is drawn

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    xs = result["fractions"]
    G = result["group_size"]
    panels = [
        ("diversity", f"distinct final answers among {G}"),
        ("zero_advantage_rate", "zero-advantage rate (all right or all wrong)"),
        ("mean_length", "response length (tokens, prefix excluded)"),
        ("accuracy", "accuracy"),
    ]
    fig = Figure(figsize=(16.0, 4.2), layout="constrained")
    axes = fig.subplots(1, 4)
    for ax, (key, label) in zip(axes, panels):
        for name in CONDITIONINGS:
            rows = result["conditionings"][name]["by_position"]
            ax.plot(xs, [d[key] for d in rows], marker="o", color=_COLOURS[name],
                    label=_LABELS[name])
            bands = [d.get(f"{key}_ci95") for d in rows]
            if all(b is not None for b in bands):
                ax.fill_between(xs, [b[0] for b in bands], [b[1] for b in bands], color=_COLOURS[name], alpha=0.12)
        ax.set_xticks(xs, [f"{x:.2f}" for x in xs])
        ax.set_xlabel("cut position (fraction of the response)")
        ax.set_title(label, fontsize="medium")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"Shortcut study: {result['n_problems']} problems, G={G} answers per conditioning and position "
                 "(bands: 95% bootstrap over problems)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
