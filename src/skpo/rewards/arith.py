"""Exact checker for the chained-arithmetic task (:mod:`skpo.tasks.arith`).

Two checks, both strict and pure string processing:

- :func:`check_answer` — the outcome reward. The completion must contain a line
  ``Answer: N`` (``N`` an integer, spaces around it allowed); the **first** such line counts and
  anything after it is ignored. Right iff ``N`` equals the problem's answer.
- :func:`check_steps` — the per-step verdict. Every line before the answer line must be an
  equation ``a op b = c`` (integers, ``op`` in ``+ - *``, spaces allowed). Equation line ``i``
  is **correct** iff

  1. it is arithmetically true (``a op b == c``), and
  2. it is consistent with the chain: ``a`` equals the previous result (the problem's first
     operand for line 0) and ``op b`` is the problem's ``i``-th operation.

  "The previous result" is the *true* running value, so once a line is wrong every later line is
  wrong too, even if it redoes the arithmetic correctly from the wrong number. That "error
  carried forward" case is reported separately in :attr:`StepCheck.locally_valid`, which uses
  the previous *written* result instead.

  ``first_error`` is the 0-based index of the first step that is wrong or missing; it equals
  ``n_steps`` when all steps are right but there are extra equation lines or the answer line is
  missing or wrong; it is ``None`` iff the completion is entirely right.

Blank lines, prose or any other line that is not an equation count as wrong lines (strict).
The checker only reads ``problem.steps`` (each with ``left, op, right, result``) and
``problem.answer``; it does not import the task module (``rewards`` sits below ``tasks``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

_EQUATION = re.compile(r"^\s*(-?\d+)\s*([+\-*])\s*(-?\d+)\s*=\s*(-?\d+)\s*$")
_ANSWER = re.compile(r"^\s*Answer:\s*(-?\d+)\s*$")
_ANSWER_PREFIX = re.compile(r"^\s*Answer:")


def apply_op(left: int, op: str, right: int) -> int:
    """The value of ``left op right`` for ``op`` in ``+ - *``."""
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    raise ValueError(f"unknown operator {op!r}; expected one of + - *")


def parse_equation(line: str) -> tuple[int, str, int, int] | None:
    """``(a, op, b, c)`` of an equation line ``a op b = c`` (the form :func:`check_steps`
    reads), or ``None`` when the line is not one."""
    match = _EQUATION.match(line)
    if match is None:
        return None
    return int(match.group(1)), match.group(2), int(match.group(3)), int(match.group(4))


class _StepLike(Protocol):
    @property
    def left(self) -> int: ...
    @property
    def op(self) -> str: ...
    @property
    def right(self) -> int: ...
    @property
    def result(self) -> int: ...


class ProblemLike(Protocol):
    """What the checker needs from a problem (:class:`skpo.tasks.arith.ArithProblem` fits)."""

    @property
    def answer(self) -> int: ...
    @property
    def steps(self) -> Sequence[_StepLike]: ...


@dataclass(frozen=True)
class StepCheck:
    """Verdict of :func:`check_steps` on one completion.

    Attributes:
        lines: the lines before the answer line (or all lines when there is none).
        correct: per line, strictly right (true arithmetic, on the true chain).
        locally_valid: per line, true arithmetic and chained to the previous *written*
            result (the problem's first operand for line 0) with the problem's operation;
            ``False`` for unparseable lines and lines beyond the problem's steps.
        first_error: first wrong or missing step (0-based); ``n_steps`` if only the ending is
            wrong (extra lines, missing/wrong answer); ``None`` iff everything is right.
        n_correct_prefix: number of leading correct lines.
        answer: the integer on the first ``Answer:`` line, ``None`` if absent or unparseable.
        answer_correct: ``answer == problem.answer``.
    """

    lines: tuple[str, ...]
    correct: tuple[bool, ...]
    locally_valid: tuple[bool, ...]
    first_error: int | None
    n_correct_prefix: int
    answer: int | None
    answer_correct: bool

    @property
    def all_correct(self) -> bool:
        return self.first_error is None


def _split_answer(completion: str) -> tuple[list[str], str | None]:
    """Lines before the first ``Answer:`` line, and that line (``None`` if absent)."""
    lines = completion.split("\n")
    for i, line in enumerate(lines):
        if _ANSWER_PREFIX.match(line):
            return lines[:i], line
    # no answer line: drop one trailing empty line produced by a final newline
    if lines and lines[-1].strip() == "":
        lines = lines[:-1]
    return lines, None


def parse_answer(completion: str) -> int | None:
    """The integer on the first ``Answer:`` line of ``completion``, or ``None``."""
    _, answer_line = _split_answer(completion)
    if answer_line is None:
        return None
    match = _ANSWER.match(answer_line)
    return int(match.group(1)) if match else None


def check_answer(completion: str, problem: ProblemLike) -> bool:
    """Outcome check: the first ``Answer: N`` line has ``N == problem.answer``."""
    answer = parse_answer(completion)
    return answer is not None and answer == problem.answer


def check_steps(completion: str, problem: ProblemLike) -> StepCheck:
    """Per-line verdict of a completion against the problem's reference chain (see module doc)."""
    body, answer_line = _split_answer(completion)
    answer = None
    if answer_line is not None:
        match = _ANSWER.match(answer_line)
        answer = int(match.group(1)) if match else None
    steps = list(problem.steps)
    start = steps[0].left if steps else 0

    correct: list[bool] = []
    local: list[bool] = []
    written_prev: int | None = start
    for i, line in enumerate(body):
        match = _EQUATION.match(line)
        if match is None or i >= len(steps):
            correct.append(False)
            local.append(False)
            written_prev = None
            continue
        a, op, b, c = int(match.group(1)), match.group(2), int(match.group(3)), int(match.group(4))
        ref = steps[i]
        arithmetic_ok = apply_op(a, op, b) == c
        operation_ok = op == ref.op and b == ref.right
        correct.append(arithmetic_ok and operation_ok and a == ref.left)
        local.append(arithmetic_ok and operation_ok and a == written_prev)
        written_prev = c

    n_prefix = 0
    while n_prefix < len(correct) and correct[n_prefix]:
        n_prefix += 1
    answer_correct = answer is not None and answer == problem.answer
    if n_prefix < len(steps):
        first_error: int | None = n_prefix
    elif len(correct) > len(steps) or not answer_correct:
        first_error = len(steps)
    else:
        first_error = None
    return StepCheck(
        lines=tuple(body),
        correct=tuple(correct),
        locally_valid=tuple(local),
        first_error=first_error,
        n_correct_prefix=n_prefix,
        answer=answer,
        answer_correct=answer_correct,
    )
