"""Sampling-based evaluation metrics: avg@k, pass@k, maj@k and success histograms.

All functions are pure (plain Python numbers in, plain numbers out) so the runner, the
trainer's periodic evaluation and the analysis scripts compute the same thing.

Notation: a benchmark has ``N`` problems; problem ``i`` gets ``n`` samples of which ``c_i``
are correct.

- **avg@k** — mean accuracy over the ``k`` samples of each problem, averaged over problems:
  ``(1/N) Σ_i c_i / k``. With ``k = 1`` this is ordinary accuracy.
- **pass@k** — probability that at least one of ``k`` samples is correct. From ``n >= k``
  samples the unbiased estimator (Chen et al. 2021, "Evaluating Large Language Models
  Trained on Code") is ``1 − C(n − c, k) / C(n, k)``, averaged over problems. It is computed
  in the product form ``1 − Π_{i = n−c+1}^{n} (1 − k / i)``, which never forms a large
  binomial coefficient; it is exactly 1 when ``n − c < k`` (every ``k``-subset holds a
  correct sample).
- **maj@k** — majority vote (self-consistency): the answer extracted most often among the
  ``k`` samples wins, and the problem counts as solved when that answer is correct. Samples
  with no extracted answer do not vote; a problem where no sample has an answer is unsolved.
  **Ties** go to the tied answer that appears **first** in sample order (sample ``j`` before
  ``j + 1``), so the result is deterministic and reproducible from the stored samples.
  Answers are compared as strings after stripping surrounding whitespace (verifiers return
  a canonical extracted string; two differently written equal answers, e.g. ``0.5`` and
  ``\\frac{1}{2}``, vote separately).
- **success histogram** — how many problems have ``c = 0, 1, …, n`` correct samples; the
  per-problem success rate is ``c / n``. Problems at ``0`` and ``n`` give no group-relative
  learning signal, so this histogram shows how much of a benchmark is "mixed".
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "avg_at_k",
    "majority_vote",
    "maj_at_k",
    "mean_pass_at_k",
    "pass_at_k",
    "pass_k_values",
    "success_histogram",
    "success_rates",
]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem from ``n`` samples with ``c`` correct.

    ``1 − C(n − c, k) / C(n, k)`` in the numerically stable product form
    ``1 − Π_{i=n−c+1}^{n} (1 − k/i)``.

    Args:
        n: samples drawn (``n >= 1``).
        c: correct samples (``0 <= c <= n``).
        k: the ``k`` of pass@k (``1 <= k <= n``).

    Raises:
        ValueError: on counts outside those ranges.
    """
    if n < 1:
        raise ValueError(f"pass@k needs n >= 1 samples, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"correct count c={c} must be in [0, n={n}]")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in [1, n={n}] (pass@k needs at least k samples)")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def mean_pass_at_k(counts: Sequence[int], n: int | Sequence[int], k: int) -> float:
    """pass@k averaged over problems.

    Args:
        counts: ``[N]`` correct samples per problem.
        n: samples per problem, one number for all or ``[N]``.
        k: the ``k`` of pass@k (at most every problem's ``n``).
    """
    ns = [n] * len(counts) if isinstance(n, int) else list(n)
    if len(ns) != len(counts):
        raise ValueError(f"{len(counts)} correct counts but {len(ns)} sample counts")
    if not counts:
        raise ValueError("mean pass@k of zero problems is undefined")
    return sum(pass_at_k(ni, ci, k) for ni, ci in zip(ns, counts)) / len(counts)


def avg_at_k(correct: Sequence[Sequence[bool | float]]) -> float:
    """Mean per-problem accuracy: ``(1/N) Σ_i mean_j correct[i][j]``.

    Args:
        correct: ``[N][k]`` per-sample correctness (bools or 0/1 rewards). Problems may have
            different numbers of samples; each problem weighs the same.
    """
    if not correct:
        raise ValueError("avg@k of zero problems is undefined")
    total = 0.0
    for i, row in enumerate(correct):
        if len(row) == 0:
            raise ValueError(f"problem {i} has no samples")
        total += sum(float(x) for x in row) / len(row)
    return total / len(correct)


def pass_k_values(k: int) -> list[int]:
    """The ``k'`` at which pass@k' is reported for ``k`` samples: ``1, 2, 4, …`` up to ``k``,
    and ``k`` itself (``pass_k_values(6) == [1, 2, 4, 6]``)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    values = []
    v = 1
    while v < k:
        values.append(v)
        v *= 2
    values.append(k)
    return values


def _norm(answer: str | None) -> str | None:
    if answer is None:
        return None
    answer = str(answer).strip()
    return answer or None


def majority_vote(answers: Sequence[str | None]) -> tuple[str | None, int | None]:
    """The most frequent answer and the index of its first occurrence.

    ``None`` (or blank) answers do not vote. Ties are broken by first occurrence: among the
    answers with the highest count, the one whose first sample index is smallest wins.

    Returns:
        ``(answer, first_index)``, or ``(None, None)`` when no sample has an answer.
    """
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for j, raw in enumerate(answers):
        a = _norm(raw)
        if a is None:
            continue
        counts[a] = counts.get(a, 0) + 1
        first.setdefault(a, j)
    if not counts:
        return None, None
    # max over (count, -first index): the highest count, then the earliest.
    winner = max(counts, key=lambda a: (counts[a], -first[a]))
    return winner, first[winner]


def maj_at_k(answers: Sequence[Sequence[str | None]], correct: Sequence[Sequence[bool]]) -> float:
    """maj@k: fraction of problems whose majority answer is correct.

    The winning answer's correctness is read from its first sample (every sample with the same
    extracted answer gets the same verdict from a deterministic verifier).

    Args:
        answers: ``[N][k]`` extracted answers (``None`` when nothing was extracted).
        correct: ``[N][k]`` verdicts of the same samples.
    """
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answer rows but {len(correct)} verdict rows")
    if not answers:
        raise ValueError("maj@k of zero problems is undefined")
    solved = 0
    for i, (row_a, row_c) in enumerate(zip(answers, correct)):
        if len(row_a) != len(row_c):
            raise ValueError(f"problem {i}: {len(row_a)} answers but {len(row_c)} verdicts")
        _, j = majority_vote(row_a)
        solved += int(j is not None and bool(row_c[j]))
    return solved / len(answers)


def success_rates(counts: Sequence[int], n: int) -> list[float]:
    """Per-problem success rates ``c_i / n``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [c / n for c in counts]


def success_histogram(counts: Sequence[int], n: int) -> list[int]:
    """``hist[c]`` = number of problems with exactly ``c`` correct samples out of ``n``.

    Returns a list of length ``n + 1`` whose sum is ``len(counts)``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    hist = [0] * (n + 1)
    for i, c in enumerate(counts):
        if not 0 <= c <= n:
            raise ValueError(f"problem {i}: correct count {c} outside [0, {n}]")
        hist[c] += 1
    return hist
