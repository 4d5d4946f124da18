"""Chained arithmetic: the embedded default's synthetic task, with step-checkable solutions.

A problem is an expression evaluated **left to right** (no operator precedence), e.g.
``37+48-12``. Its solution writes one equation per operation, each starting from the previous
result, and ends with the answer line::

    37+48=85
    85-12=73
    Answer: 73

Every line can be checked exactly (see :mod:`skpo.rewards.arith`), which is what makes the task
useful for studying intermediate-step quality.

Pieces:

- :class:`ArithConfig` — the difficulty knobs (number of operations, operand range, operators,
  whether intermediate results may be negative, a cap on intermediate results).
- :func:`generate_problems` — a seeded generator of :class:`ArithProblem`. Problems are split
  into a *train* and an *eval* side by a hash of the question text (:func:`split_of`), so a
  held-out set is disjoint from any training stream by construction, whatever the seeds.
- :func:`solution_text` — the deterministic reference solution.
- :func:`flawed_solution` — a solution with one early wrong result that is carried forward
  (later lines are arithmetically right but start from the wrong number), used as a flawed
  draft for the skip format ``[s, q]``.
- :func:`heldout_problems` — the fixed evaluation set of the embedded default.

Simplifications (on purpose):

- Left-to-right evaluation, not standard precedence: ``3+4*2`` is 14. The question is written
  without brackets; the solution's lines make the order explicit.
- Right operands are positive integers drawn uniformly from the operand range; only the
  running result may be negative (when ``allow_negative`` is true).
- Without ``allow_negative``, a ``-`` whose result would drop below zero is redrawn (another
  operator or operand), which slightly skews the operator mix toward ``+`` for small values.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from skpo.rewards.arith import apply_op
from skpo.tasks.synthetic import distinct_heldout, problem_stream
from skpo.tasks.synthetic import split_of as split_of  # (public here too: the task's split)

OPERATORS: tuple[str, ...] = ("+", "-", "*")
ANSWER_PREFIX = "Answer:"

_QUESTION_TOKEN = re.compile(r"\s*(\d+|[+\-*])")


@dataclass(frozen=True)
class Step:
    """One line of a solution: ``left op right = result``."""

    left: int
    op: str
    right: int
    result: int

    @property
    def text(self) -> str:
        """The line as written in a solution, e.g. ``85-12=73`` (no spaces)."""
        return f"{self.left}{self.op}{self.right}={self.result}"


@dataclass(frozen=True)
class ArithProblem:
    """A chained-arithmetic problem.

    Attributes:
        question: the expression, e.g. ``"37+48-12"`` (evaluated left to right).
        answer: the final value.
        steps: the reference chain, one :class:`Step` per operation.
    """

    question: str
    answer: int
    steps: tuple[Step, ...]

    @property
    def n_ops(self) -> int:
        return len(self.steps)

    @classmethod
    def from_operands(cls, first: int, ops: list[tuple[str, int]]) -> ArithProblem:
        """Build a problem from a first operand and ``[(op, right), ...]``."""
        if not ops:
            raise ValueError("a problem needs at least one operation")
        steps: list[Step] = []
        value = first
        for op, right in ops:
            result = apply_op(value, op, right)
            steps.append(Step(value, op, right, result))
            value = result
        question = str(first) + "".join(f"{op}{right}" for op, right in ops)
        return cls(question=question, answer=value, steps=tuple(steps))

    @classmethod
    def from_question(cls, question: str) -> ArithProblem:
        """Parse an expression such as ``"37+48-12"`` (spaces allowed) into a problem."""
        pieces = _QUESTION_TOKEN.findall(question)
        if "".join(pieces) != re.sub(r"\s+", "", question) or len(pieces) < 3 or len(pieces) % 2 == 0:
            raise ValueError(f"not a chained expression of non-negative integers: {question!r}")
        numbers, ops = pieces[0::2], pieces[1::2]
        if not all(n.isdigit() for n in numbers) or not all(o in OPERATORS for o in ops):
            raise ValueError(f"not a chained expression of non-negative integers: {question!r}")
        return cls.from_operands(int(numbers[0]), [(o, int(n)) for o, n in zip(ops, numbers[1:])])


@dataclass(frozen=True)
class ArithConfig:
    """Difficulty knobs of the chained-arithmetic task.

    Attributes:
        min_ops, max_ops: number of operations per problem, drawn uniformly in this range.
        min_operand, max_operand: every operand (first and right-hand ones) is drawn uniformly
            in this range (inclusive).
        operators: which operators may appear (subset of ``+ - *``), drawn uniformly.
        allow_negative: whether the running result may go below zero.
        max_abs_result: if set, an operation whose result exceeds it in absolute value is
            redrawn (keeps ``*`` chains short in digits).
        eval_buckets: one question in ``eval_buckets`` (by hash) belongs to the eval side.
    """

    min_ops: int = 2
    max_ops: int = 4
    min_operand: int = 1
    max_operand: int = 50
    operators: tuple[str, ...] = ("+", "-")
    allow_negative: bool = False
    max_abs_result: int | None = None
    eval_buckets: int = 16

    def __post_init__(self) -> None:
        if not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(f"need 1 <= min_ops <= max_ops, got {self.min_ops}, {self.max_ops}")
        if not 0 <= self.min_operand <= self.max_operand:
            raise ValueError(
                f"need 0 <= min_operand <= max_operand, got {self.min_operand}, {self.max_operand}"
            )
        if not self.operators or any(o not in OPERATORS for o in self.operators):
            raise ValueError(f"operators must be a non-empty subset of {OPERATORS}, got {self.operators}")
        if self.eval_buckets < 2:
            raise ValueError(f"eval_buckets must be >= 2, got {self.eval_buckets}")


def sample_problem(config: ArithConfig, rng: random.Random) -> ArithProblem:
    """Draw one problem (ignores the train/eval split; see :func:`generate_problems`)."""
    n_ops = rng.randint(config.min_ops, config.max_ops)
    value = rng.randint(config.min_operand, config.max_operand)
    first = value
    ops: list[tuple[str, int]] = []
    while len(ops) < n_ops:
        op = rng.choice(config.operators)
        right = rng.randint(config.min_operand, config.max_operand)
        result = apply_op(value, op, right)
        if not config.allow_negative and result < 0:
            continue
        if config.max_abs_result is not None and abs(result) > config.max_abs_result:
            continue
        ops.append((op, right))
        value = result
    return ArithProblem.from_operands(first, ops)


def iter_problems(config: ArithConfig, seed: int, split: str | None = "train") -> Iterator[ArithProblem]:
    """An endless seeded stream of problems on ``split`` (see :func:`generate_problems`)."""
    return problem_stream("arith", sample_problem, config, seed, split)


def generate_problems(
    config: ArithConfig, n: int, seed: int, split: str | None = "train"
) -> list[ArithProblem]:
    """The first ``n`` problems of the seeded stream :func:`iter_problems`.

    Args:
        config: difficulty.
        n: how many problems to return.
        seed: the stream's seed (same seed, same config -> same list).
        split: ``"train"``, ``"eval"`` or ``None`` (no filter). Train and eval problems are
            disjoint by construction (:func:`split_of`); duplicates within a list are allowed.
    """
    return list(itertools.islice(iter_problems(config, seed, split), n))


HELDOUT_SEED = 20260501
"""Seed of the embedded default's fixed held-out set (a stream of its own, eval side only)."""


def heldout_problems(config: ArithConfig | None = None, n: int = 200) -> list[ArithProblem]:
    """The fixed held-out evaluation set: ``n`` distinct eval-side problems of ``config``."""
    config = config or ArithConfig()
    return distinct_heldout("arith", sample_problem, config, HELDOUT_SEED, n)


def solution_text(problem: ArithProblem) -> str:
    """The reference solution: one equation per line, then ``Answer: N`` (no trailing newline)."""
    lines = [step.text for step in problem.steps]
    lines.append(f"{ANSWER_PREFIX} {problem.answer}")
    return "\n".join(lines)


@dataclass(frozen=True)
class FlawedSolution:
    """A solution whose step ``error_step`` has a wrong result that is carried forward.

    Attributes:
        text: the full solution text (same format as :func:`solution_text`), wrong answer.
        steps: the written steps (``steps[error_step].result`` is wrong; later steps are
            arithmetically right but start from the wrong running value).
        error_step: 0-based index of the first wrong line.
        answer: the (wrong) value on the answer line.
    """

    text: str
    steps: tuple[Step, ...] = field(repr=False)
    error_step: int
    answer: int


def flawed_solution(
    problem: ArithProblem,
    rng: random.Random,
    error_step: int | None = None,
    max_offset: int = 10,
) -> FlawedSolution:
    """A solution with one arithmetic slip at ``error_step`` that propagates to the answer.

    The slip adds a nonzero offset in ``[-max_offset, max_offset]`` to that step's result; an
    offset that would turn a non-negative result negative is redrawn. Later lines redo the
    arithmetic correctly from the wrong value, so the first error is exactly ``error_step``.
    An offset that the rest of the chain absorbs (e.g. a later ``*0``) is redrawn, so the
    final answer is always wrong.

    Args:
        problem: the problem.
        rng: randomness for the step (when not given) and the offset.
        error_step: 0-based step to corrupt; default: uniform over the *early* steps, i.e. the
            first half of the chain (at least step 0).
        max_offset: largest absolute offset.
    """
    n = problem.n_ops
    if error_step is None:
        error_step = rng.randint(0, max(0, (n - 1) // 2))
    if not 0 <= error_step < n:
        raise ValueError(f"error_step {error_step} out of range for {n} steps")
    for _ in range(1000):
        offset = rng.choice([d for d in range(-max_offset, max_offset + 1) if d != 0])
        true = problem.steps[error_step]
        wrong = true.result + offset
        if true.result >= 0 and wrong < 0:
            continue
        steps = list(problem.steps[:error_step]) + [Step(true.left, true.op, true.right, wrong)]
        value = wrong
        for step in problem.steps[error_step + 1 :]:
            result = apply_op(value, step.op, step.right)
            steps.append(Step(value, step.op, step.right, result))
            value = result
        if value == problem.answer:
            continue
        lines = [s.text for s in steps] + [f"{ANSWER_PREFIX} {value}"]
        return FlawedSolution("\n".join(lines), tuple(steps), error_step, value)
    raise RuntimeError(f"could not corrupt step {error_step} of {problem.question!r}")
