"""How accurate are Monte Carlo advantages? The paper's Fig. 1/8 and App. A.3, on the embedded task.

The whole story (sources, readings, how each step runs): ``docs/analyses.md``, section "Notes from skpo.analysis.mc_accuracy"."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from skpo.engines.engine import Completion, SamplingParams, mix_seed
from skpo.engines.hf_engine import HFEngine
from skpo.evaluation.runner import ARITH_EXTRA_TOKENS
from skpo.rewards.arith import check_answer
from skpo.rewards.countdown import check_countdown
from skpo.rollout.montecarlo import step_boundaries
from skpo.tasks.arith import ArithProblem
from skpo.tasks.countdown import CountdownProblem
from skpo.tasks.prompts import stop_token_ids
from skpo.tasks.templates import plain_input_ids, response_ids

__all__ = [
    "ArithSampler",
    "Log",
    "McAccuracySettings",
    "ZERO_TOL",
    "analyse",
    "block_means",
    "bootstrap_ci",
    "bootstrap_ratio_ci",
    "centred_standard_error",
    "collect",
    "group_normalize",
    "plot",
    "position_bins",
    "run",
    "score_entries",
    "sign3",
    "sign_matches",
    "step_advantages",
    "step_positions",
    "stopwatch",
    "token_position",
    "value_standard_error",
]

ZERO_TOL = 1e-9
"""``|x| < ZERO_TOL`` counts as a zero advantage (values are multiples of ``1/K``)."""

Log = Callable[[str], None]


# ---------------------------------------------------------------------- pure functions


def block_means(samples: Tensor, k: int) -> Tensor:
    """``K``-sample estimates from disjoint blocks of a pool.

    Args:
        samples: ``[N, M]`` rewards, ``M`` exchangeable samples per prefix.
        k: block size ``K`` (``1 <= K <= M``).

    Returns:
        ``[N, M // K]`` float64: block ``r`` is the mean of ``samples[:, r·K : (r+1)·K]``; the
        last ``M mod K`` samples are unused. Each block is an unbiased ``K``-sample estimate
        of the prefix's value, and the blocks are independent of each other.
    """
    if not 1 <= k <= samples.shape[-1]:
        raise ValueError(f"block size {k} must be in [1, {samples.shape[-1]}]")
    n_blocks = samples.shape[-1] // k
    used = samples[..., : n_blocks * k].double()
    return used.reshape(*samples.shape[:-1], n_blocks, k).mean(-1)


def sign3(x: Tensor, tol: float = ZERO_TOL) -> Tensor:
    """Three-valued sign: ``−1``, ``0`` (``|x| < tol``) or ``+1``; same shape as ``x``, long."""
    out = torch.zeros(x.shape, dtype=torch.long)
    out[x >= tol] = 1
    out[x <= -tol] = -1
    return out


def sign_matches(est: Tensor, true: Tensor, tol: float = ZERO_TOL) -> Tensor:
    """``[E, R]`` bool: ``sign3(est[e, r]) == sign3(true[e])`` (estimates ``[E, R]``, truth ``[E]``)."""
    return sign3(est, tol) == sign3(true, tol)[:, None]


def group_normalize(x: Tensor, epsilon: float = 1e-6) -> Tensor:
    """GRPO normalisation over the last axis: ``(x − mean) / (std + ε)`` with Bessel's std.

    ``x``: ``[..., G]`` (``G >= 2``). An all-equal group gives exactly 0 (its centred values are
    0). Same convention as :func:`skpo.algorithms.advantages.group_normalized_scores`.
    """
    x = x.double()
    centred = x - x.mean(-1, keepdim=True)
    # An all-equal group: centre exactly (float means of equal values may round).
    equal = (x.amax(-1, keepdim=True) - x.amin(-1, keepdim=True)) == 0
    centred = torch.where(equal, torch.zeros_like(centred), centred)
    return centred / (x.std(-1, keepdim=True) + epsilon)


def step_advantages(values: Tensor) -> Tensor:
    """VinePPO step advantages ``A_k = V[k+1] − V[k]`` (γ = 1, reward only at the end), along
    the last axis: values ``[..., S+1]`` (``V[S]`` = the outcome) → advantages ``[..., S]``."""
    return values[..., 1:] - values[..., :-1]


def step_positions(num_steps: int) -> Tensor:
    """``[S]`` relative positions of the steps of an ``S``-step answer: ``(k + 0.5) / S``."""
    return (torch.arange(num_steps, dtype=torch.float64) + 0.5) / num_steps


def token_position(u: float, length: int) -> int:
    """The prefix length at relative position ``u`` of a ``length``-token answer:
    ``round(u · length)`` (halves up), clamped to ``[0, length − 1]`` so a continuation is drawn."""
    return min(max(int(math.floor(u * length + 0.5)), 0), max(length - 1, 0))


def position_bins(rel: Tensor, n_bins: int = 5) -> Tensor:
    """``[E]`` long bin of relative positions ``rel`` ``[E]`` in ``[0, 1]``: ``⌊n_bins · rel⌋``,
    1.0 in the last bin."""
    return (rel * n_bins).floor().long().clamp(0, n_bins - 1)


def value_standard_error(values: Tensor, k: int, smoothed: bool = False) -> Tensor:
    """Standard error of a ``K``-sample estimate of a probability: ``sqrt(V (1 − V) / K)``.

    ``smoothed=True`` plugs in ``Ṽ = (V·K + 1) / (K + 2)`` (Laplace) instead of ``V``, so an
    estimate of exactly 0 or 1 still gets an error of about ``1/K`` rather than 0. Shapes: any.
    """
    v = values.double()
    if smoothed:
        v = (v * k + 1) / (k + 2)
    return (v * (1 - v) / k).sqrt()


def centred_standard_error(rows: Sequence[int], row_se: Tensor) -> Tensor:
    """Standard errors ``[G]`` of the group-centred truths ``x_i − mean_j x_j``.

    ``rows``: ``[G]`` the truth pool of each answer (answers that share a prefix share a pool);
    ``row_se``: ``[N]`` standard error of each pool's value. With distinct pools independent,
    ``x_i − mean_j x_j = Σ_m c_m X_m`` with ``c_m = 1[m = rows_i] − |{j: rows_j = m}| / G``,
    so the variance is ``Σ_m c_m² se_m²``.
    """
    G = len(rows)
    uniq = sorted(set(rows))
    counts = torch.tensor([sum(r == m for r in rows) for m in uniq], dtype=torch.float64)  # [U]
    onehot = torch.tensor([[float(r == m) for m in uniq] for r in rows], dtype=torch.float64)  # [G, U]
    coef = onehot - counts / G  # [G, U]
    se_u = row_se[list(uniq)].double()  # [U]
    return ((coef**2) * se_u**2).sum(-1).sqrt()


def bootstrap_ratio_ci(
    num: Tensor, den: Tensor, reps: int = 2000, level: float = 0.95, seed: int = 0
) -> list[float] | None:
    """Percentile bootstrap interval of ``Σ num / Σ den`` when the ``U`` units (problems,
    segments) are resampled with replacement.

    Args:
        num, den: ``[U]`` per-unit sums (e.g. matches and scored estimates of one problem).
    Returns ``[low, high]`` or ``None`` when ``Σ den = 0``; resamples with ``Σ den = 0`` are
    dropped.
    """
    num, den = num.double(), den.double()
    if num.numel() == 0 or float(den.sum()) == 0:
        return None
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, num.numel(), (reps, num.numel()), generator=g)  # [reps, U]
    d = den[idx].sum(-1)
    ratio = num[idx].sum(-1)[d > 0] / d[d > 0]
    alpha = (1 - level) / 2
    q = torch.quantile(ratio, torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    return [float(q[0]), float(q[1])]


def bootstrap_ci(
    stat: Callable[[Tensor], float | None], n: int, reps: int = 1000, level: float = 0.95, seed: int = 0
) -> list[float] | None:
    """Percentile bootstrap interval of ``stat(indices)`` over ``n`` units resampled with
    replacement (``indices`` ``[n]`` long); resamples where ``stat`` is ``None`` are dropped."""
    if n < 2:
        return None
    g = torch.Generator().manual_seed(seed)
    vals = [stat(torch.randint(0, n, (n,), generator=g)) for _ in range(reps)]
    kept = torch.tensor([v for v in vals if v is not None and math.isfinite(v)], dtype=torch.float64)
    if kept.numel() < reps // 2:
        return None
    alpha = (1 - level) / 2
    q = torch.quantile(kept, torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    return [float(q[0]), float(q[1])]


def score_entries(
    est: Tensor,
    true: Tensor,
    mask: Tensor | None = None,
    true_se: Tensor | None = None,
    z: float = 2.0,
    tol: float = ZERO_TOL,
    units: Tensor | None = None,
) -> dict[str, Any]:
    """Sign accuracy and MAE of estimates ``[E, R]`` (``R`` replicates) against truths ``[E]``.

    ``true_se`` ``[E]``: the standard error of each truth; an entry's true sign counts as
    **resolved** when the truth is not zero and ``|true| >= z · true_se`` (all non-zero entries
    without ``true_se``). ``mask`` ``[E]`` selects entries. Returns (``None`` where no entry
    qualifies):

    - ``sign_accuracy``: over resolved entries, the fraction of (entry, replicate) pairs with
      ``sign(est) == sign(true)``; an estimate of exactly 0 is wrong. The headline number.
    - ``sign_accuracy_nonzero``: the same over every entry whose truth is not zero.
    - ``sign_accuracy_3way``: over all entries with signs ``−1, 0, +1`` (a true zero is matched
      only by an estimate of exactly 0).
    - ``zero_agreement``: over entries whose truth is exactly zero, the fraction of estimates
      that are exactly 0 too.
    - ``mae`` (all entries and replicates), ``mae_resolved``.
    - ``true_zero_fraction``, ``resolved_fraction``, ``n_entries``, ``n_resolved``, ``replicates``.
    - with ``units`` ``[E]`` (the problem of each entry, long): ``sign_accuracy_ci95`` and
      ``mae_ci95``, percentile bootstrap over problems (:func:`bootstrap_ratio_ci`).
    """
    if mask is not None:
        est, true = est[mask], true[mask]
        true_se = None if true_se is None else true_se[mask]
        units = None if units is None else units[mask]
    n, reps = int(true.shape[0]), int(est.shape[1])
    out: dict[str, Any] = {
        "sign_accuracy": None, "sign_accuracy_nonzero": None, "sign_accuracy_3way": None, "zero_agreement": None,
        "mae": None, "mae_resolved": None, "true_zero_fraction": None, "resolved_fraction": None,
        "n_entries": n, "n_resolved": 0, "replicates": reps,
    }
    if n == 0:
        return out
    match = sign_matches(est, true, tol).double()  # [E, R]
    nonzero = sign3(true, tol) != 0  # [E]
    resolved = nonzero if true_se is None else nonzero & (true.double().abs() >= z * true_se.double())
    err = (est.double() - true.double()[:, None]).abs()  # [E, R]
    out.update(
        sign_accuracy_3way=float(match.mean()),
        mae=float(err.mean()),
        true_zero_fraction=float((~nonzero).double().mean()),
        resolved_fraction=float(resolved.double().mean()),
        n_resolved=int(resolved.sum()),
    )
    if bool(resolved.any()):
        out.update(sign_accuracy=float(match[resolved].mean()), mae_resolved=float(err[resolved].mean()))
    if units is not None:
        u = int(units.max()) + 1
        per = lambda x: torch.zeros(u, dtype=torch.float64).index_add_(0, units, x)  # noqa: E731  [U]
        res = resolved.double()
        out["sign_accuracy_ci95"] = bootstrap_ratio_ci(per(match.sum(-1) * res), per(res * reps))
        out["mae_ci95"] = bootstrap_ratio_ci(per(err.sum(-1)), per(torch.full((n,), float(reps), dtype=torch.float64)))
    if bool(nonzero.any()):
        out["sign_accuracy_nonzero"] = float(match[nonzero].mean())
    if bool((~nonzero).any()):
        out["zero_agreement"] = float(match[~nonzero].mean())
    return out


# ---------------------------------------------------------------------- sampling helper


@dataclass
class ArithSampler:
    """The policy on an embedded task (arithmetic or countdown): prompts, answer budgets,
    sampling, verdicts.

    ``budget(problem)`` is the reference response's length + 16 tokens (``skpo eval``'s budget
    for the synthetic tasks); a continuation of a prefix of ``n`` answer tokens gets ``budget − n``.
    ``correct`` is the task's reward: the exact final answer (arithmetic) or the ``countdown``
    check (each number once, exact value).
    """

    model: Any
    tokenizer: Any
    engine: HFEngine

    @classmethod
    def build(cls, model: Any, tokenizer: Any, batch_size: int = 512) -> ArithSampler:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        engine = HFEngine(
            model, pad_token_id=int(pad), eos_token_id=stop_token_ids(tokenizer, model), batch_size=batch_size
        )
        return cls(model, tokenizer, engine)

    def prompt(self, problem: ArithProblem) -> list[int]:
        return plain_input_ids(self.tokenizer, problem)

    def budget(self, problem: ArithProblem) -> int:
        return len(response_ids(self.tokenizer, problem)) + ARITH_EXTRA_TOKENS

    def text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def correct(self, problem: ArithProblem | CountdownProblem, answer_ids: Sequence[int]) -> bool:
        if isinstance(problem, CountdownProblem):
            return check_countdown(self.text(answer_ids), problem.numbers, problem.target).correct
        return check_answer(self.text(answer_ids), problem)

    def newline_ids(self) -> set[int]:
        """Token ids whose text holds a newline: the step delimiters."""
        return {i for i in range(len(self.tokenizer)) if "\n" in self.tokenizer.decode([i])}

    def generate(
        self, prompts: list[list[int]], n: int, budgets: Sequence[int], seeds: Sequence[int], temperature: float = 1.0
    ) -> list[list[Completion]]:
        """``[B][n]`` completions; prompt ``i`` gets ``budgets[i]`` new tokens and prompt seed ``seeds[i]``."""
        if not prompts:
            return []
        params = SamplingParams(temperature=temperature, max_new_tokens=max(budgets), seed=list(seeds))
        return self.engine.generate(prompts, n, params, max_new_tokens=[int(b) for b in budgets])

    def continuation_rewards(
        self,
        problems: Sequence[ArithProblem],
        prompts: Sequence[Sequence[int]],
        prefixes: Sequence[Sequence[int]],
        n: int,
        budgets: Sequence[int],
        seeds: Sequence[int],
        temperature: float = 1.0,
    ) -> tuple[Tensor, list[list[Completion]]]:
        """``n`` continuations of ``prompt + prefix`` each, scored as the answer ``prefix + c``.

        Returns ``[N, n]`` float32 0/1 rewards and the completions."""
        inputs = [list(q) + list(s) for q, s in zip(prompts, prefixes)]
        outs = self.generate(inputs, n, budgets, seeds, temperature)
        rewards = torch.tensor(
            [[float(self.correct(problems[m], list(prefixes[m]) + c.token_ids)) for c in row]
             for m, row in enumerate(outs)],
            dtype=torch.float32,
        ).reshape(len(inputs), n)
        return rewards, outs


def stopwatch() -> Callable[[], float]:
    """A function that returns the seconds since this call."""
    start = time.perf_counter()
    return lambda: time.perf_counter() - start


# ---------------------------------------------------------------------- settings


@dataclass(frozen=True)
class McAccuracySettings:
    """Settings of ``skpo analyze mc-accuracy`` (defaults: a ~5-minute run on 2 CPU cores)."""

    problems: int = 24
    group_size: int = 8
    k_true: int = 256
    k_est: int = 32
    ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    report_k: int = 8
    token_positions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    n_bins: int = 5
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = 512

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError("group_size must be >= 2 (the group-relative reading normalises across answers)")
        if self.k_true < 2 or self.k_est < 1:
            raise ValueError("k_true must be >= 2 and k_est >= 1")
        if not self.ks or any(not 1 <= k <= self.k_est for k in self.ks):
            raise ValueError(f"every K in {self.ks} must be in [1, k_est={self.k_est}]")
        if self.report_k not in self.ks:
            raise ValueError(f"report_k={self.report_k} must be one of ks={self.ks}")
        if any(not 0.0 <= u < 1.0 for u in self.token_positions):
            raise ValueError("token positions must be in [0, 1)")

    @classmethod
    def quick(cls, seed: int = 0) -> McAccuracySettings:
        """A few-second setting for the test suite (same code path)."""
        return cls(problems=2, group_size=4, k_true=16, k_est=8, ks=(1, 2, 4, 8), report_k=4, seed=seed)


# ---------------------------------------------------------------------- generation


@dataclass
class McData:
    """Everything sampled by :func:`collect` (``P`` problems, ``G`` answers each).

    Attributes:
        answers: ``[P][G]`` answer token lists.
        outcomes: ``[P, G]`` float64 0/1.
        step_states: ``[P][G]`` prefix lengths of the non-terminal step states ``s_0 … s_{S−1}``.
        token_states: ``[P][G]`` prefix lengths at the relative token positions.
        truth_index: ``(p, prefix tuple) → row`` of ``truth``.
        truth: ``[N_t, K_true]`` float32 0/1 continuation rewards.
        est_index: ``(p, i, prefix length) → row`` of ``est``.
        est: ``[N_e, K_est]`` float32 0/1 continuation rewards.
        timings: seconds per phase.
    """

    answers: list[list[list[int]]]
    outcomes: Tensor
    step_states: list[list[list[int]]]
    token_states: list[list[list[int]]]
    truth_index: dict[tuple, int]
    truth: Tensor
    est_index: dict[tuple[int, int, int], int]
    est: Tensor
    timings: dict[str, float] = field(default_factory=dict)
    decoded_tokens: int = 0


def collect(
    model: Any, tokenizer: Any, problems: Sequence[ArithProblem], settings: McAccuracySettings, log: Log | None = None
) -> McData:
    """Sample the answers, the truth pools and the estimation pools (three engine calls)."""
    log = log or (lambda _msg: None)
    s = settings
    sampler = ArithSampler.build(model, tokenizer, s.batch_size)
    P, G = len(problems), s.group_size
    prompts = [sampler.prompt(p) for p in problems]
    budgets = [sampler.budget(p) for p in problems]
    timings: dict[str, float] = {}

    clock = stopwatch()
    outs = sampler.generate(prompts, G, budgets, [mix_seed(s.seed, 1, p) for p in range(P)], s.temperature)
    answers = [[list(c.token_ids) for c in row] for row in outs]
    outcomes = torch.tensor(
        [[float(sampler.correct(problems[p], a)) for a in answers[p]] for p in range(P)], dtype=torch.float64
    )  # [P, G]
    timings["answers"] = clock()
    decoded = sum(len(a) for row in answers for a in row)
    log(f"answers: {P}×{G}, accuracy {float(outcomes.mean()):.3f} ({timings['answers']:.1f} s)")

    newline = sampler.newline_ids()
    step_states = [[[0, *step_boundaries(a, newline)] for a in answers[p]] for p in range(P)]
    token_states = [[[token_position(u, len(a)) for u in s.token_positions] for a in answers[p]] for p in range(P)]

    truth_index: dict[tuple, int] = {}
    est_index: dict[tuple[int, int, int], int] = {}
    t_rows: list[tuple[int, list[int], int]] = []  # (problem, prefix, seed)
    e_rows: list[tuple[int, list[int], int]] = []
    for p in range(P):
        for i, a in enumerate(answers[p]):
            for pos in sorted(set(step_states[p][i]) | set(token_states[p][i])):
                key = (p, tuple(a[:pos]))
                if key not in truth_index:
                    truth_index[key] = len(t_rows)
                    t_rows.append((p, a[:pos], mix_seed(s.seed, 2, p, i, pos)))
                est_index[(p, i, pos)] = len(e_rows)
                e_rows.append((p, a[:pos], mix_seed(s.seed, 3, p, i, pos)))

    def pool(rows: list[tuple[int, list[int], int]], n: int) -> tuple[Tensor, int]:
        rewards, outs = sampler.continuation_rewards(
            [problems[p] for p, _, _ in rows], [prompts[p] for p, _, _ in rows], [pre for _, pre, _ in rows], n,
            [budgets[p] - len(pre) for p, pre, _ in rows], [seed for _, _, seed in rows], s.temperature,
        )
        return rewards, sum(len(c) for row in outs for c in row)

    clock = stopwatch()
    truth, n_tok = pool(t_rows, s.k_true)
    decoded += n_tok
    timings["truth"] = clock()
    log(f"truth: {len(t_rows)} distinct prefixes × {s.k_true} continuations ({timings['truth']:.1f} s)")
    clock = stopwatch()
    est, n_tok = pool(e_rows, s.k_est)
    decoded += n_tok
    timings["estimates"] = clock()
    log(f"estimates: {len(e_rows)} (answer, prefix) pairs × {s.k_est} continuations ({timings['estimates']:.1f} s)")
    return McData(answers, outcomes, step_states, token_states, truth_index, truth, est_index, est, timings, decoded)


# ---------------------------------------------------------------------- tables


def _reading_tables(
    est: dict[int, Tensor], true: Tensor, true_se: Tensor, grpo: Tensor, bins: Tensor, n_correct: Tensor,
    problem: Tensor, settings: McAccuracySettings, true_halves: tuple[Tensor, Tensor],
) -> dict[str, Any]:
    """Scores of one reading: entries ``[E]`` with ``est[K]`` ``[E, R_K]``, ``true``/``true_se``/
    ``grpo``/``bins``/``n_correct``/``problem`` ``[E]`` (intervals: bootstrap over problems)."""
    s = settings
    G = s.group_size

    def score(x: Tensor, mask: Tensor | None = None) -> dict[str, Any]:
        return score_entries(x, true, mask, true_se, units=problem)

    out: dict[str, Any] = {"n_entries": int(true.shape[0])}
    out["by_k"] = {str(k): score(est[k]) for k in s.ks}
    out["by_k_bin"] = {str(k): [score(est[k], bins == b) for b in range(s.n_bins)] for k in s.ks}
    g = grpo[:, None]
    out["grpo"] = {
        "all": score(g),
        "by_bin": [score(g, bins == b) for b in range(s.n_bins)],
        "by_n_correct": {str(c): score(g, n_correct == c) for c in range(G + 1)},
    }
    out[f"by_n_correct_k{s.report_k}"] = {str(c): score(est[s.report_k], n_correct == c) for c in range(G + 1)}
    out["by_n_correct_all_k"] = {
        str(k): {str(c): score(est[k], n_correct == c)["sign_accuracy"] for c in range(G + 1)} for k in s.ks
    }
    nonzero = sign3(true) != 0  # an all-equal group's z-unit error is unbounded (its std is 0)
    out["mean_true_se_nonzero"] = float(true_se[nonzero].mean()) if bool(nonzero.any()) else None
    h1, h2 = true_halves
    # How stable the truth's sign is: two independent K_true/2 halves of its pool.
    out["truth_split_half"] = score_entries(h1[:, None], h2)
    return out


def analyse(data: McData, settings: McAccuracySettings) -> dict[str, Any]:
    """The numbers of the analysis from sampled data (pure; see module doc)."""
    s = settings
    P, G = data.outcomes.shape
    v_true = data.truth.double().mean(-1)  # [N_t]
    se_true = value_standard_error(v_true, s.k_true, smoothed=True)  # [N_t]
    half = s.k_true // 2
    v_h1, v_h2 = data.truth[:, :half].double().mean(-1), data.truth[:, half : 2 * half].double().mean(-1)
    blocks = {k: block_means(data.est, k) for k in s.ks}  # K → [N_e, R_K]
    n_correct_p = data.outcomes.sum(-1).long()  # [P]

    # (a) VinePPO step advantages ------------------------------------------------------------
    a_true, a_h1, a_h2, a_grpo, a_rel, a_nc, a_se, a_pb = [], [], [], [], [], [], [], []
    a_est: dict[int, list[Tensor]] = {k: [] for k in s.ks}
    answers_out: list[dict[str, Any]] = []
    for p in range(P):
        mean_outcome = data.outcomes[p].mean()
        for i in range(G):
            ans = data.answers[p][i]
            states = data.step_states[p][i]
            S = len(states)
            outcome = data.outcomes[p, i]
            rows = [data.truth_index[(p, tuple(ans[:pos]))] for pos in states]
            vt = torch.cat([v_true[rows], outcome[None]])  # [S+1]
            a_true.append(step_advantages(vt))
            a_h1.append(step_advantages(torch.cat([v_h1[rows], outcome[None]])))
            a_h2.append(step_advantages(torch.cat([v_h2[rows], outcome[None]])))
            se = torch.cat([se_true[rows], torch.zeros(1, dtype=torch.float64)])  # the outcome is exact
            a_se.append((se[1:] ** 2 + se[:-1] ** 2).sqrt())
            a_grpo.append((outcome - mean_outcome).expand(S))
            a_rel.append(step_positions(S))
            a_nc.append(n_correct_p[p].expand(S))
            a_pb.append(torch.full((S,), p, dtype=torch.long))
            erows = [data.est_index[(p, i, pos)] for pos in states]
            for k in s.ks:
                ve = blocks[k][erows]  # [S, R]
                ve = torch.cat([ve, outcome.expand(1, ve.shape[1])])  # [S+1, R]
                a_est[k].append(step_advantages(ve.T).T)  # [S, R]
            tok_rows = [data.truth_index[(p, tuple(ans[:pos]))] for pos in data.token_states[p][i]]
            answers_out.append({
                "problem": p, "answer": i, "correct": bool(outcome), "tokens": len(ans),
                "step_prefix_lengths": states, "step_values_true": [round(float(x), 4) for x in vt[:-1]],
                "token_prefix_lengths": data.token_states[p][i],
                "token_values_true": [round(float(v_true[r]), 4) for r in tok_rows],
            })
    a_true_t = torch.cat(a_true)
    a_se_t = torch.cat(a_se)
    a_rel_t = torch.cat(a_rel)
    vine = _reading_tables(
        {k: torch.cat(v) for k, v in a_est.items()}, a_true_t, a_se_t, torch.cat(a_grpo),
        position_bins(a_rel_t, s.n_bins), torch.cat(a_nc), torch.cat(a_pb), s, (torch.cat(a_h1), torch.cat(a_h2)),
    )
    vine["steps_per_answer"] = {str(n): sum(1 for r in answers_out if len(r["step_prefix_lengths"]) == n)
                                for n in sorted({len(r["step_prefix_lengths"]) for r in answers_out})}

    # (b) group-relative normalisation at aligned relative token positions ----------------------
    b_true, b_se, b_h1, b_h2, b_grpo, b_bin, b_nc, b_pb = [], [], [], [], [], [], [], []
    b_est: dict[int, list[Tensor]] = {k: [] for k in s.ks}
    for p in range(P):
        grpo = group_normalize(data.outcomes[p])  # [G]
        for j, u in enumerate(s.token_positions):
            pos = [data.token_states[p][i][j] for i in range(G)]
            rows = [data.truth_index[(p, tuple(data.answers[p][i][: pos[i]]))] for i in range(G)]
            b_true.append(group_normalize(v_true[rows]))
            # In z-units: the centred truth's error over the same (std + ε) as the truth.
            b_se.append(centred_standard_error(rows, se_true) / (v_true[rows].std() + 1e-6))
            b_h1.append(group_normalize(v_h1[rows]))
            b_h2.append(group_normalize(v_h2[rows]))
            b_grpo.append(grpo)
            b_bin.append(position_bins(torch.full((G,), float(u), dtype=torch.float64), s.n_bins))
            b_nc.append(n_correct_p[p].expand(G))
            b_pb.append(torch.full((G,), p, dtype=torch.long))
            erows = [data.est_index[(p, i, pos[i])] for i in range(G)]
            for k in s.ks:
                b_est[k].append(group_normalize(blocks[k][erows].T).T)  # [G, R]
    group = _reading_tables(
        {k: torch.cat(v) for k, v in b_est.items()}, torch.cat(b_true), torch.cat(b_se), torch.cat(b_grpo),
        torch.cat(b_bin), torch.cat(b_nc), torch.cat(b_pb), s, (torch.cat(b_h1), torch.cat(b_h2)),
    )

    se = value_standard_error(v_true, s.k_true)
    hist = torch.bincount(n_correct_p, minlength=G + 1).tolist()
    return {
        "n_problems": P,
        "group_size": G,
        "n_answers": P * G,
        "accuracy": float(data.outcomes.mean()),
        "problems_by_n_correct": hist,
        "mean_answer_tokens": sum(len(a) for row in data.answers for a in row) / (P * G),
        "truth": {
            "k_true": s.k_true,
            "n_prefixes": int(v_true.shape[0]),
            "worst_case_se": 0.5 / math.sqrt(s.k_true),
            "mean_se": float(se.mean()),
            "max_se": float(se.max()),
            "resolution": "a true sign counts as resolved when |true| >= 2 standard errors of the truth "
                          "(binomial, Laplace-smoothed V; group-relative: the centred truth's error)",
            "fraction_of_values_exactly_0_or_1": float(((v_true == 0) | (v_true == 1)).double().mean()),
        },
        "estimates": {"k_est": s.k_est, "n_pools": int(data.est.shape[0]),
                      "replicates": {str(k): s.k_est // k for k in s.ks}},
        "bin_edges": [b / s.n_bins for b in range(s.n_bins + 1)],
        "vineppo": vine,
        "group_relative": group,
        "answers": answers_out,
    }


# ---------------------------------------------------------------------- run + figure


def run(
    model: Any, tokenizer: Any, problems: Sequence[ArithProblem], settings: McAccuracySettings, log: Log | None = None
) -> dict[str, Any]:
    """:func:`collect` then :func:`analyse`; adds ``timings`` and ``decoded_tokens``."""
    data = collect(model, tokenizer, problems, settings, log)
    clock = stopwatch()
    out = analyse(data, settings)
    data.timings["analysis"] = clock()
    out["timings"] = {k: round(v, 2) for k, v in data.timings.items()}
    out["decoded_tokens"] = data.decoded_tokens
    out["settings"] = asdict(settings)
    return out


def _bin_labels(n_bins: int) -> list[str]:
    return [f"{b / n_bins:.1f}–{(b + 1) / n_bins:.1f}" for b in range(n_bins)]


def _nan(x: float | None) -> float:
    return math.nan if x is None else x


MIN_PLOTTED = 10
"""A sign accuracy resting on fewer resolved entries than this is left out of the figure (it is
in the JSON)."""


def _acc(row: dict[str, Any]) -> float:
    return math.nan if row["n_resolved"] < MIN_PLOTTED else _nan(row["sign_accuracy"])


def plot(result: dict[str, Any], path: str | Path, dpi: int = 120) -> Path:
    """Sign accuracy vs K per position bin (both readings, GRPO dashed), sign accuracy by number
    correct, and sign accuracy / MAE vs relative position at ``report_k``; saved as PNG. Sign
    accuracies resting on fewer than :data:`MIN_PLOTTED` resolved entries are not drawn."""
    import matplotlib  # heavy: loaded when a figure is drawn

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    s = result["settings"]
    ks, n_bins, rk, G = s["ks"], s["n_bins"], s["report_k"], result["group_size"]
    readings = [("vineppo", "(a) VinePPO step advantage"), ("group_relative", "(b) group-relative MC reward")]
    labels = _bin_labels(n_bins)
    centres = [(b + 0.5) / n_bins for b in range(n_bins)]
    cmap = matplotlib.colormaps["viridis"]
    fig = Figure(figsize=(16.0, 8.4), layout="constrained")
    axes = fig.subplots(2, 3)
    for col, (key, title) in enumerate(readings):
        ax = axes[0, col]
        r = result[key]
        for b in range(n_bins):
            ys = [_acc(r["by_k_bin"][str(k)][b]) for k in ks]
            ax.plot(ks, ys, marker="o", color=cmap(b / max(1, n_bins - 1)), label=f"position {labels[b]}")
        ax.plot(ks, [_acc(r["by_k"][str(k)]) for k in ks], color="black", linewidth=2, label="all positions (95% band)")
        bands = [r["by_k"][str(k)].get("sign_accuracy_ci95") for k in ks]
        if all(b is not None for b in bands):
            ax.fill_between(ks, [b[0] for b in bands], [b[1] for b in bands], color="black", alpha=0.1)
        ax.axhline(_acc(r["grpo"]["all"]), color="black", linestyle="--", label="GRPO (all positions)")
        ax.set_xscale("log", base=2)
        ax.set_xlim(min(ks) / 1.25, max(ks) * 1.25)  # explicit: a panel with no resolved entry has no data to scale
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("K (MC samples per prefix)")
        ax.set_ylabel("sign accuracy (resolved true signs)")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{title}: sign accuracy vs K")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    # by number correct
    ax = axes[0, 2]
    cs = list(range(G + 1))
    for key, title in readings:
        r = result[key]
        ys = [_acc(r[f"by_n_correct_k{rk}"][str(c)]) for c in cs]
        line = ax.plot(cs, ys, marker="o", label=f"{title.split(')')[0]}) MC, K={rk}")[0]
        gy = [_acc(r["grpo"]["by_n_correct"][str(c)]) for c in cs]
        ax.plot(cs, gy, marker="x", linestyle="--", color=line.get_color(), label=f"{title.split(')')[0]}) GRPO")
    ax.set_xticks(cs, [f"{c}/{G}" for c in cs])
    ax.set_xlabel("answers correct in the problem's group")
    ax.set_ylabel("sign accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"by group outcome (K={rk})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    # vs position at report_k
    for col, metric in enumerate(("sign_accuracy", "mae")):
        ax = axes[1, col]
        for key, title in readings:
            r = result[key]
            get = _acc if metric == "sign_accuracy" else (lambda row: _nan(row["mae"]))
            ys = [get(r["by_k_bin"][str(rk)][b]) for b in range(n_bins)]
            line = ax.plot(centres, ys, marker="o", label=f"{title.split(')')[0]}) MC, K={rk}")[0]
            gy = [get(r["grpo"]["by_bin"][b]) for b in range(n_bins)]
            ax.plot(centres, gy, marker="x", linestyle="--", color=line.get_color(),
                    label=f"{title.split(')')[0]}) GRPO")
        ax.set_xlabel("relative position in the answer")
        ax.set_ylabel("sign accuracy" if metric == "sign_accuracy" else "MAE ((a): probability, (b): z-units)")
        ax.set_title(f"{'sign accuracy' if metric == 'sign_accuracy' else 'MAE'} vs position (K={rk})")
        ax.set_xlim(0, 1)
        if metric == "sign_accuracy":
            ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    # MAE vs K
    ax = axes[1, 2]
    for key, title in readings:
        r = result[key]
        tag = title.split(")")[0] + ")"
        line = ax.plot(ks, [r["by_k"][str(k)]["mae"] for k in ks], marker="o", label=f"{tag} MC, all entries")[0]
        ax.plot(ks, [_nan(r["by_k"][str(k)]["mae_resolved"]) for k in ks], marker="o", linestyle=":",
                color=line.get_color(), label=f"{tag} MC, resolved entries")
        ax.axhline(r["grpo"]["all"]["mae"], color=line.get_color(), linestyle="--", label=f"{tag} GRPO, all entries")
    ax.set_xscale("log", base=2)
    ax.set_xlim(min(ks) / 1.25, max(ks) * 1.25)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("K (MC samples per prefix)")
    ax.set_ylabel("MAE")
    ax.set_title("MAE vs K (all positions)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", loc="center right")
    fig.suptitle(
        f"MC advantage accuracy: {result['n_problems']} problems × {G} answers, truth K={s['k_true']} "
        f"(accuracy {result['accuracy']:.2f})"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
