"""Countdown: given numbers and a target, write an equation that uses each number once and
reaches the target — the second embedded task, where the first moves decide the outcome.

A problem is ``N`` numbers and a target, written ``44 19 3 8 -> 75``. Its solution writes one
move per line (two numbers of the pool combined into a new one), then the whole equation as
one expression on the answer line::

    44-19=25
    25*3=75
    75+8=83
    Answer: ((44-19)*3)+8

Every move removes two numbers from the pool and adds its result, so after ``N − 1`` moves one
number is left. A first move that combines the wrong pair leaves a pool from which the target
cannot be reached: nothing later can repair it. That is what makes the task useful for SKPO's
premise (early tokens decide the outcome), unlike chained arithmetic, where every line is
dictated by the question.

Pieces:

- :class:`CountdownConfig` — the knobs: how many numbers (3–4 by default), their range, the
  target range, the operators, a cap on intermediate results.
- :func:`sample_problem` / :func:`iter_problems` / :func:`generate_problems` — problems whose
  target is **reachable by construction**: the generator draws the numbers, then combines
  random pairs with random operators until one number is left; that number is the target,
  and the moves are the reference solution (every number used exactly once).
- :func:`split_of` (the arithmetic task's: a stable hash of the question text) — a held-out
  side disjoint from any training stream whatever the seeds; :func:`heldout_problems` is the
  fixed evaluation set.
- :func:`solve` / :func:`reachable` — an exhaustive solver over exact rationals (what the
  reward accepts), for tests and for measuring dead-end first moves.
- :func:`solution_text`, :func:`flawed_solution` — the reference solution and a solution whose
  first move is a dead end (a flawed draft for the skip format ``[s, q]``).

Readings picked where the task is open:

- **Each given number exactly once** (TinyZero's rule: the multiset of numbers in the answer
  equals the given multiset); intermediate results are not "numbers of the answer".
- **The reference moves stay in positive integers** (``-`` only from the larger number, ``/``
  only when it divides exactly, results at most ``max_intermediate``); the reward evaluates
  any answer in exact rationals (:mod:`skpo.rewards.countdown`), as TinyZero allows, so a
  model may reach the target through fractions or negative values.
- **No identity moves** (``x*1``, ``x/1``) in the reference solutions: they change nothing and
  would teach the model moves that carry no decision; a ``1`` is used with ``+`` or ``-``.
- **Moves are written larger number first** (``25*3``, never ``3*25``): one canonical form per
  move, so the model's choice is which pair and which operator, not the order.
- **The answer line wraps every compound operand in parentheses** (``((44-19)*3)+8``): the
  expression is built mechanically from the moves, without precedence rules to learn.
- The generator's operator choice is uniform over the operators whose result is allowed for
  the drawn pair; a pair with none is redrawn. Problems whose target falls outside the target
  range are redrawn, which skews the operator mix toward what lands in range.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from skpo.tasks.synthetic import distinct_heldout, problem_stream
from skpo.tasks.synthetic import split_of as split_of  # (public here too: the task's split)

OPERATORS: tuple[str, ...] = ("+", "-", "*", "/")
ANSWER_PREFIX = "Answer:"
ARROW = "->"

_QUESTION = re.compile(r"^\s*(\d+(?:\s+\d+)*)\s*->\s*(\d+)\s*$")


@dataclass(frozen=True)
class Move:
    """One line of a solution: ``left op right = result`` (``left >= right``)."""

    left: int
    op: str
    right: int
    result: int

    @property
    def text(self) -> str:
        """The line as written in a solution, e.g. ``44-19=25`` (no spaces)."""
        return f"{self.left}{self.op}{self.right}={self.result}"


def apply_move(left: int, op: str, right: int) -> int | None:
    """``left op right`` when it is a positive integer and not an identity move (``*1``, ``/1``):
    the reference moves' rule. ``None`` otherwise."""
    if op == "+":
        return left + right
    if op == "-":
        return left - right if left > right else None
    if op == "*":
        return left * right if right > 1 else None
    if op == "/":
        return left // right if right > 1 and left % right == 0 else None
    raise ValueError(f"unknown operator {op!r}; expected one of {OPERATORS}")


@dataclass(frozen=True)
class CountdownProblem:
    """A countdown problem with its reference solution.

    Attributes:
        numbers: the given numbers, in the order shown.
        target: the value to reach.
        moves: the reference solution, ``len(numbers) − 1`` moves.
        expression: the reference answer expression (``((44-19)*3)+8``).
    """

    numbers: tuple[int, ...]
    target: int
    moves: tuple[Move, ...] = ()
    expression: str = ""

    @property
    def question(self) -> str:
        """The problem as the prompt shows it: ``"44 19 3 8 -> 75"``."""
        return f"{' '.join(str(n) for n in self.numbers)} {ARROW} {self.target}"

    @property
    def answer(self) -> int:
        """The target (the value every correct answer reaches)."""
        return self.target

    @classmethod
    def from_question(cls, question: str) -> CountdownProblem:
        """Parse ``"44 19 3 8 -> 75"`` (no reference solution is attached)."""
        match = _QUESTION.match(question)
        if match is None:
            raise ValueError(f"not a countdown question 'n1 n2 ... -> target': {question!r}")
        return cls(tuple(int(n) for n in match.group(1).split()), int(match.group(2)))


@dataclass(frozen=True)
class CountdownConfig:
    """The knobs of the countdown task.

    Attributes:
        min_numbers, max_numbers: how many numbers a problem gives, drawn uniformly.
        min_number, max_number: each number's range (inclusive).
        min_target, max_target: the target's range (inclusive); problems outside are redrawn.
        operators: the operators of the reference moves (subset of ``+ - * /``).
        max_intermediate: a move whose result exceeds it is not drawn (keeps products short).
        eval_buckets: one question in ``eval_buckets`` (by hash) belongs to the eval side.
    """

    min_numbers: int = 3
    max_numbers: int = 4
    min_number: int = 1
    max_number: int = 10
    min_target: int = 10
    max_target: int = 100
    operators: tuple[str, ...] = OPERATORS
    max_intermediate: int = 200
    eval_buckets: int = 16

    def __post_init__(self) -> None:
        if not 2 <= self.min_numbers <= self.max_numbers <= 6:
            raise ValueError(f"need 2 <= min_numbers <= max_numbers <= 6, got {self.min_numbers}, {self.max_numbers}")
        if not 1 <= self.min_number <= self.max_number:
            raise ValueError(f"need 1 <= min_number <= max_number, got {self.min_number}, {self.max_number}")
        if not 1 <= self.min_target <= self.max_target:
            raise ValueError(f"need 1 <= min_target <= max_target, got {self.min_target}, {self.max_target}")
        if not self.operators or any(o not in OPERATORS for o in self.operators) or len(set(self.operators)) != len(self.operators):
            raise ValueError(f"operators must be a non-empty subset of {OPERATORS}, got {self.operators}")
        if self.max_intermediate < self.max_target:
            raise ValueError(f"max_intermediate ({self.max_intermediate}) must be >= max_target ({self.max_target})")
        if self.eval_buckets < 2:
            raise ValueError(f"eval_buckets must be >= 2, got {self.eval_buckets}")


def _expression(values: Sequence[str], i: int, j: int, op: str, swap: bool) -> str:
    """The expression of combining pool entries ``i`` and ``j`` (their expressions ``values``)."""
    left, right = (values[j], values[i]) if swap else (values[i], values[j])
    wrap = lambda e: e if e.isdigit() else f"({e})"  # noqa: E731  every compound operand in parentheses
    return f"{wrap(left)}{op}{wrap(right)}"


def _construct(numbers: Sequence[int], config: CountdownConfig, rng: random.Random) -> tuple[tuple[Move, ...], str] | None:
    """Combine random pairs of ``numbers`` until one is left; ``None`` when a pool has no allowed move."""
    pool = list(numbers)
    exprs = [str(n) for n in numbers]
    moves: list[Move] = []
    while len(pool) > 1:
        options = []
        for i, j in itertools.combinations(range(len(pool)), 2):
            big, small = max(pool[i], pool[j]), min(pool[i], pool[j])
            for op in config.operators:
                result = apply_move(big, op, small)
                if result is not None and 0 < result <= config.max_intermediate:
                    options.append((i, j, op, result))
        if not options:
            return None
        pairs = sorted({(i, j) for i, j, _, _ in options})
        i, j = rng.choice(pairs)
        i, j, op, result = rng.choice([o for o in options if o[:2] == (i, j)])
        swap = pool[j] > pool[i]
        big, small = (pool[j], pool[i]) if swap else (pool[i], pool[j])
        moves.append(Move(big, op, small, result))
        expr = _expression(exprs, i, j, op, swap)
        pool = [v for k, v in enumerate(pool) if k not in (i, j)] + [result]
        exprs = [e for k, e in enumerate(exprs) if k not in (i, j)] + [expr]
    return tuple(moves), exprs[0]


def sample_problem(config: CountdownConfig, rng: random.Random) -> CountdownProblem:
    """Draw one problem (ignores the train/eval split; see :func:`generate_problems`)."""
    for _ in range(100_000):
        n = rng.randint(config.min_numbers, config.max_numbers)
        numbers = tuple(rng.randint(config.min_number, config.max_number) for _ in range(n))
        built = _construct(numbers, config, rng)
        if built is None:
            continue
        moves, expression = built
        target = moves[-1].result
        if config.min_target <= target <= config.max_target:
            return CountdownProblem(numbers, target, moves, expression)
    raise RuntimeError(f"could not draw a countdown problem for {config}")


def iter_problems(config: CountdownConfig, seed: int, split: str | None = "train") -> Iterator[CountdownProblem]:
    """An endless seeded stream of problems on ``split`` (see :func:`generate_problems`)."""
    return problem_stream("countdown", sample_problem, config, seed, split)


def generate_problems(config: CountdownConfig, n: int, seed: int, split: str | None = "train") -> list[CountdownProblem]:
    """The first ``n`` problems of the seeded stream :func:`iter_problems` (train and eval
    problems are disjoint by construction: :func:`split_of`; duplicates within a list are allowed)."""
    return list(itertools.islice(iter_problems(config, seed, split), n))


HELDOUT_SEED = 20260601
"""Seed of the fixed held-out set (a stream of its own, eval side only)."""


def heldout_problems(config: CountdownConfig | None = None, n: int = 200) -> list[CountdownProblem]:
    """The fixed held-out evaluation set: ``n`` distinct eval-side problems of ``config``."""
    config = config or CountdownConfig()
    return distinct_heldout("countdown", sample_problem, config, HELDOUT_SEED, n)


def solution_text(problem: CountdownProblem) -> str:
    """The reference solution: one move per line, then ``Answer: <expression>`` (no trailing newline)."""
    if not problem.moves:
        raise ValueError(f"problem {problem.question!r} has no reference solution")
    return "\n".join([m.text for m in problem.moves] + [f"{ANSWER_PREFIX} {problem.expression}"])


# ----------------------------------------------------------------------------- the solver


def _combine(a: Fraction, b: Fraction) -> list[Fraction]:
    """Every value of one binary operation on ``a`` and ``b`` (either order; no division by 0)."""
    out = [a + b, a - b, b - a, a * b]
    if b != 0:
        out.append(a / b)
    if a != 0:
        out.append(b / a)
    return out


@lru_cache(maxsize=200_000)
def _values(pool: tuple[Fraction, ...]) -> frozenset[Fraction]:
    """Every value an expression using each entry of ``pool`` (sorted) exactly once can take."""
    if len(pool) == 1:
        return frozenset(pool)
    out: set[Fraction] = set()
    for i, j in itertools.combinations(range(len(pool)), 2):
        rest = [v for k, v in enumerate(pool) if k not in (i, j)]
        for c in _combine(pool[i], pool[j]):
            out |= _values(tuple(sorted([*rest, c])))
    return frozenset(out)


def reachable(pool: Sequence[int | Fraction], target: int | Fraction) -> bool:
    """Whether some expression with ``+ - * /`` over exact rationals, using every entry of
    ``pool`` exactly once, equals ``target`` (what :mod:`skpo.rewards.countdown` accepts)."""
    return Fraction(target) in _values(tuple(sorted(Fraction(v) for v in pool)))


def solve(numbers: Sequence[int], target: int | Fraction, limit: int | None = None) -> list[str]:
    """Distinct answer expressions (fully parenthesised, e.g. ``((4+6)*2)-1``) that use each of
    ``numbers`` exactly once and equal ``target`` in exact rationals; at most ``limit`` of them.

    Brute force over every pair, operator and order; meant for ``N <= 5`` numbers.
    """
    goal = Fraction(target)
    found: list[str] = []
    seen: set[str] = set()

    def search(pool: list[tuple[Fraction, str]]) -> bool:
        if len(pool) == 1:
            if pool[0][0] == goal and pool[0][1] not in seen:
                seen.add(pool[0][1])
                found.append(pool[0][1])
            return limit is not None and len(found) >= limit
        if goal not in _values(tuple(sorted(v for v, _ in pool))):
            return False
        for i, j in itertools.combinations(range(len(pool)), 2):
            (a, ea), (b, eb) = pool[i], pool[j]
            rest = [p for k, p in enumerate(pool) if k not in (i, j)]
            wa, wb = (ea if ea.isdigit() else f"({ea})"), (eb if eb.isdigit() else f"({eb})")
            options = [(a + b, f"{wa}+{wb}"), (a - b, f"{wa}-{wb}"), (b - a, f"{wb}-{wa}"), (a * b, f"{wa}*{wb}")]
            if b != 0:
                options.append((a / b, f"{wa}/{wb}"))
            if a != 0:
                options.append((b / a, f"{wb}/{wa}"))
            for value, expr in options:
                if search([*rest, (value, expr)]):
                    return True
        return False

    search([(Fraction(n), str(n)) for n in numbers])
    return found


# ----------------------------------------------------------------------------- flawed drafts


@dataclass(frozen=True)
class FlawedSolution:
    """A solution whose first move leaves the target unreachable (a dead end).

    Attributes:
        text: the full solution text (same format as :func:`solution_text`), wrong answer.
        moves: the written moves; ``moves[0]`` is the dead end, later moves are valid
            arithmetic on the pool it leaves.
        value: the value the answer line reaches (never the target).
    """

    text: str
    moves: tuple[Move, ...]
    value: int


def dead_end_moves(numbers: Sequence[int], target: int, config: CountdownConfig) -> list[tuple[int, int, str, int]]:
    """First moves allowed by ``config`` (pool indices ``i < j``, operator, result) after which
    ``target`` is unreachable."""
    out = []
    for i, j in itertools.combinations(range(len(numbers)), 2):
        big, small = max(numbers[i], numbers[j]), min(numbers[i], numbers[j])
        for op in config.operators:
            result = apply_move(big, op, small)
            if result is None or not 0 < result <= config.max_intermediate:
                continue
            rest = [v for k, v in enumerate(numbers) if k not in (i, j)] + [result]
            if not reachable(rest, target):
                out.append((i, j, op, result))
    return out


def flawed_solution(problem: CountdownProblem, config: CountdownConfig, rng: random.Random) -> FlawedSolution | None:
    """A solution that opens with a dead-end first move and finishes with random valid moves,
    or ``None`` when every allowed first move keeps the target reachable."""
    options = dead_end_moves(problem.numbers, problem.target, config)
    if not options:
        return None
    for _ in range(100):
        i, j, op, result = rng.choice(options)
        swap = problem.numbers[j] > problem.numbers[i]
        big, small = (problem.numbers[j], problem.numbers[i]) if swap else (problem.numbers[i], problem.numbers[j])
        exprs = [str(n) for n in problem.numbers]
        first = Move(big, op, small, result)
        expr = _expression(exprs, i, j, op, swap)
        rest = [v for k, v in enumerate(problem.numbers) if k not in (i, j)]
        rest_exprs = [e for k, e in enumerate(exprs) if k not in (i, j)]
        built = _construct_from([*rest, result], [*rest_exprs, expr], config, rng)
        if built is None:
            continue
        moves, final_expr, value = built
        lines = [first.text] + [m.text for m in moves] + [f"{ANSWER_PREFIX} {final_expr}"]
        return FlawedSolution("\n".join(lines), (first, *moves), value)
    return None


def _construct_from(pool: list[int], exprs: list[str], config: CountdownConfig,
                    rng: random.Random) -> tuple[tuple[Move, ...], str, int] | None:
    """Random allowed moves from ``pool`` (expressions ``exprs``) down to one number."""
    moves: list[Move] = []
    while len(pool) > 1:
        options = []
        for i, j in itertools.combinations(range(len(pool)), 2):
            big, small = max(pool[i], pool[j]), min(pool[i], pool[j])
            for op in config.operators:
                result = apply_move(big, op, small)
                if result is not None and 0 < result <= config.max_intermediate:
                    options.append((i, j, op, result))
        if not options:
            return None
        i, j, op, result = rng.choice(options)
        swap = pool[j] > pool[i]
        big, small = (pool[j], pool[i]) if swap else (pool[i], pool[j])
        moves.append(Move(big, op, small, result))
        expr = _expression(exprs, i, j, op, swap)
        pool = [v for k, v in enumerate(pool) if k not in (i, j)] + [result]
        exprs = [e for k, e in enumerate(exprs) if k not in (i, j)] + [expr]
    return tuple(moves), exprs[0], pool[0]


# ----------------------------------------------------------------------------- first moves

_MOVE_LINE = re.compile(r"^\s*(\d{1,9})\s*([+\-*/])\s*(\d{1,9})\s*=\s*(\d{1,9})\s*$")

FIRST_MOVE_KINDS: tuple[str, ...] = ("reachable", "dead_end", "invalid", "no_move")
"""How a completion's first line stands (:func:`first_move_kind`)."""


def first_move_kind(completion: str, numbers: Sequence[int], target: int) -> str:
    """How the first line of ``completion`` stands:

    - ``"reachable"``: a move ``a op b = c`` on two given numbers, arithmetically exact, after
      which the target can still be reached (:func:`reachable`);
    - ``"dead_end"``: such a move after which it cannot — no later line can repair it;
    - ``"invalid"``: a move line with a number not in the pool or a wrong result;
    - ``"no_move"``: the first line is not a move (e.g. the answer line straight away).
    """
    match = _MOVE_LINE.match(completion.split("\n", 1)[0])
    if match is None:
        return "no_move"
    a, op, b, c = int(match.group(1)), match.group(2), int(match.group(3)), int(match.group(4))
    pool = list(numbers)
    for n in (a, b):
        if n not in pool:
            return "invalid"
        pool.remove(n)
    x, y = Fraction(a), Fraction(b)
    value = {"+": x + y, "-": x - y, "*": x * y, "/": x / y if y else None}[op]
    if value is None or value != c:
        return "invalid"
    return "reachable" if reachable([*pool, c], target) else "dead_end"
