"""Exact, bounded checker of countdown answers: the ``countdown`` reward.

An answer is correct iff its final equation (one arithmetic expression) uses **each given
number exactly once** — the multiset of number literals in the expression equals the given
multiset, TinyZero's rule — and evaluates **exactly** (``fractions.Fraction``) to the target.
Anything else scores 0, with the reason in the verdict.

Where the final equation is read (:func:`extract_expression`):

1. **TinyZero / verl layout**: when the completion holds ``<answer>``, the content of the
   **last** complete ``<answer>…</answer>`` pair (TinyZero's scorer reads the last one, from
   the last line of prompt + response; here from anywhere in the completion, which is the
   response alone).
2. **The embedded task's layout** (:mod:`skpo.tasks.countdown`): otherwise the **first** line
   that starts with ``Answer:``; the rest of that line is the expression (the arithmetic
   task's rule: the first answer line counts).

The expression language is parsed by a small recursive-descent parser of its own — never
``eval``:

- number literals: runs of decimal digits (at most :data:`MAX_DIGITS`); no decimal point, no
  exponent, no sign;
- binary ``+ - * /`` with the usual precedence (``*`` and ``/`` bind tighter, left to right),
  parentheses and any whitespace (an answer tag on lines of its own); ``×`` and ``÷`` read as
  ``*`` and ``/``;
- **no unary operators**: ``-3+5`` and ``+3`` are refused (a reading picked here: the given
  numbers are positive and ``a-b`` reaches every value a negation could, so a leading sign only
  hides a number's use);
- the final equation may be written out: ``(44-19)*3 = 75`` is read as ``(44-19)*3`` when the
  right side is exactly the target (a reading picked here; TinyZero's character filter refuses
  any ``=``); the right side is not a use of a number. Any other ``=`` is refused;
- refused with a reason: ``**`` (power), letters (names), any other character, division by
  zero.

Bounds, checked in this order so that no input costs more than a few thousand steps:

- a completion over :data:`MAX_COMPLETION_CHARS` characters is refused before it is searched;
- an expression over :data:`MAX_EXPRESSION_CHARS` characters is refused before it is
  tokenized;
- more than :data:`MAX_TOKENS` tokens, or parentheses nested deeper than :data:`MAX_DEPTH`,
  stop the tokenizer; the parser's recursion is bounded by the depth, the token count by the
  cap, and the size of any intermediate value by the digit and token caps.

Differences from TinyZero's scorer (``verl/utils/reward_score/countdown.py`` in TinyZero),
on purpose: exact rational arithmetic instead of ``eval`` in floats with a ``1e-5`` tolerance;
a reward of 0 or 1 (TinyZero gives 0.1 for a well-formed wrong equation; here every method's
reward range maps 0/1, and partial credit for format is left to a user reward); unary signs
refused (TinyZero's ``\\d+`` count ignores them).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from skpo.rewards.base import Verdict

__all__ = [
    "CountdownParseError",
    "MAX_COMPLETION_CHARS",
    "MAX_DEPTH",
    "MAX_DIGITS",
    "MAX_EXPRESSION_CHARS",
    "MAX_TOKENS",
    "check_countdown",
    "evaluate_expression",
    "extract_expression",
    "numbers_and_target",
    "parse_expression",
]

MAX_COMPLETION_CHARS = 1_000_000
"""Longest completion searched for an answer (a million characters; longer: 0, unread)."""
MAX_EXPRESSION_CHARS = 256
"""Longest answer expression parsed."""
MAX_TOKENS = 64
"""Most tokens (numbers, operators, parentheses) in an answer expression."""
MAX_DEPTH = 16
"""Deepest parenthesis nesting in an answer expression."""
MAX_DIGITS = 9
"""Most digits in one number literal."""

_OPERATORS = "+-*/"
_OPERATOR_SIGNS = {"×": "*", "÷": "/"}  # as written by people and chat models
_ANSWER_LINE = re.compile(r"^[ \t]*Answer:(.*)$", re.MULTILINE)


class CountdownParseError(ValueError):
    """An answer expression that is not in the language, or over a bound; the message is the reason."""


# ----------------------------------------------------------------------------- extraction


def extract_expression(completion: str) -> tuple[str | None, str]:
    """The final equation of ``completion`` and where it came from (see module doc).

    Returns ``(expression, how)``: ``how`` is ``"answer tag"`` or ``"answer line"`` with the
    expression, or the reason there is none (``expression`` is then ``None``).
    """
    if len(completion) > MAX_COMPLETION_CHARS:
        return None, f"completion over {MAX_COMPLETION_CHARS:,} characters"
    if "<answer>" in completion:
        close = completion.rfind("</answer>")
        if close == -1:
            return None, "no closing </answer>"
        open_ = completion.rfind("<answer>", 0, close)
        if open_ == -1:
            return None, "no <answer> before the last </answer>"
        return completion[open_ + len("<answer>") : close], "answer tag"
    match = _ANSWER_LINE.search(completion)
    if match is None:
        return None, "no answer found (neither <answer>...</answer> nor an 'Answer:' line)"
    return match.group(1), "answer line"


# ----------------------------------------------------------------------------- parsing


def _tokenize(text: str) -> list[str]:
    """Number literals, operators and parentheses of ``text`` (spaces dropped), within the bounds."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise CountdownParseError(f"answer over {MAX_EXPRESSION_CHARS} characters")
    tokens: list[str] = []
    depth = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c.isdigit() and c.isascii():
            j = i
            while j < n and text[j].isdigit() and text[j].isascii():
                j += 1
            if j - i > MAX_DIGITS:
                raise CountdownParseError(f"a number of more than {MAX_DIGITS} digits")
            if j < n and text[j] == ".":
                raise CountdownParseError("decimal numbers are not allowed")
            tokens.append(text[i:j])
            i = j
        elif c == "*" and text.startswith("**", i):
            raise CountdownParseError("'**' (power) is not allowed")
        elif c in _OPERATORS or c in _OPERATOR_SIGNS:
            tokens.append(_OPERATOR_SIGNS.get(c, c))
            i += 1
        elif c == "(":
            depth += 1
            if depth > MAX_DEPTH:
                raise CountdownParseError(f"parentheses nested deeper than {MAX_DEPTH}")
            tokens.append(c)
            i += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise CountdownParseError("unbalanced parentheses: ')' without '('")
            tokens.append(c)
            i += 1
        elif c == "=":
            raise CountdownParseError("'=' in the answer (write the expression only)")
        elif c.isalpha() or c == "_":
            raise CountdownParseError("names are not allowed")
        elif c == ".":
            raise CountdownParseError("decimal numbers are not allowed")
        else:
            raise CountdownParseError(f"unexpected character {c!r}")
        if len(tokens) > MAX_TOKENS:
            raise CountdownParseError(f"answer over {MAX_TOKENS} tokens")
    if depth != 0:
        raise CountdownParseError("unbalanced parentheses: '(' without ')'")
    if not tokens:
        raise CountdownParseError("empty answer")
    return tokens


Tree = int | tuple[str, "Tree", "Tree"]
"""A parsed expression: a number literal's value, or ``(op, left, right)``."""


@dataclass
class _Parser:
    tokens: list[str]
    pos: int = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expression(self) -> Tree:  # expression := term (('+' | '-') term)*
        tree = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            tree = (op, tree, self.term())
        return tree

    def term(self) -> Tree:  # term := factor (('*' | '/') factor)*
        tree = self.factor()
        while self.peek() in ("*", "/"):
            op = self.take()
            tree = (op, tree, self.factor())
        return tree

    def factor(self) -> Tree:  # factor := NUMBER | '(' expression ')'
        token = self.peek()
        if token is None:
            raise CountdownParseError("the answer ends where a number was expected")
        if token.isdigit():
            self.pos += 1
            return int(token)
        if token == "(":
            self.pos += 1
            tree = self.expression()
            if self.peek() != ")":
                raise CountdownParseError("unbalanced parentheses: '(' without ')'")
            self.pos += 1
            return tree
        if token in ("+", "-"):
            raise CountdownParseError(f"unary {token!r} is not allowed")
        raise CountdownParseError(f"{token!r} where a number was expected")


def parse_expression(text: str) -> Tree:
    """The tree of an answer expression; :class:`CountdownParseError` with the reason otherwise."""
    parser = _Parser(_tokenize(text))
    tree = parser.expression()
    if parser.pos != len(parser.tokens):
        raise CountdownParseError(f"unexpected {parser.tokens[parser.pos]!r} after a complete expression")
    return tree


def _numbers(tree: Tree) -> list[int]:
    if isinstance(tree, int):
        return [tree]
    return _numbers(tree[1]) + _numbers(tree[2])


def _value(tree: Tree) -> Fraction:
    if isinstance(tree, int):
        return Fraction(tree)
    op, left, right = tree
    a, b = _value(left), _value(right)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        raise ZeroDivisionError
    return a / b


def evaluate_expression(text: str) -> Fraction:
    """The exact value of an answer expression (:class:`CountdownParseError` on a bad one,
    ``ZeroDivisionError`` on a division by zero)."""
    return _value(parse_expression(text))


# ----------------------------------------------------------------------------- the check


def _left_of_target(expression: str, target: int | Fraction) -> str:
    """``expression`` without a trailing ``= <target>`` (the equation written out); any other
    ``=`` is refused."""
    if "=" not in expression:
        return expression
    left, _, right = expression.rpartition("=")
    right = right.strip()
    if "=" in left or not (right.isdigit() and right.isascii()) or len(right) > MAX_DIGITS:
        raise CountdownParseError("'=' in the answer: write the expression, or the expression = the target")
    if Fraction(int(right)) != Fraction(target):
        raise CountdownParseError(f"the equation's right side is {right}, not the target {target}")
    return left


def check_countdown(completion: str, numbers: Sequence[int], target: int | Fraction) -> Verdict:
    """The verdict of ``completion`` on the problem (``numbers``, ``target``): reward 1 iff its
    final equation uses each number exactly once and equals the target (module doc)."""
    expression, how = extract_expression(completion)
    if expression is None:
        return Verdict.wrong(how)
    shown = expression.strip()[:80]
    try:
        tree = parse_expression(_left_of_target(expression, target))
    except CountdownParseError as err:
        return Verdict.wrong(f"unparseable answer: {err}", shown)
    used, given = Counter(_numbers(tree)), Counter(int(n) for n in numbers)
    if used != given:
        extra, missing = used - given, given - used
        parts = []
        if extra:
            parts.append("not given or used too often: " + ", ".join(str(n) for n in sorted(extra.elements())))
        if missing:
            parts.append("unused: " + ", ".join(str(n) for n in sorted(missing.elements())))
        return Verdict.wrong("numbers must be used exactly once (" + "; ".join(parts) + ")", shown)
    try:
        value = _value(tree)
    except ZeroDivisionError:
        return Verdict.wrong("division by zero", shown)
    if value != Fraction(target):
        return Verdict.wrong(f"reaches {value}, not {target}", shown)
    return Verdict.right("correct", shown)


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if hasattr(value, "__index__"):  # numpy integers from a Parquet reader
        return int(value.__index__())
    raise ValueError(f"{what} must be an integer, got {value!r:.60}")


def numbers_and_target(problem: Any) -> tuple[tuple[int, ...], int]:
    """The given numbers and the target of ``problem``: its ``countdown`` attribute (the
    synthetic task), else its row's ``reward_model.ground_truth`` (``numbers``, ``target``;
    TinyZero's and verl's layout), else the row's ``nums`` and ``target`` columns.

    Raises ``ValueError`` naming what is missing or malformed.
    """
    synthetic = getattr(problem, "countdown", None)
    if synthetic is not None:
        return tuple(synthetic.numbers), int(synthetic.target)
    row = getattr(problem, "row", None)
    if not isinstance(row, Mapping):
        raise ValueError("a countdown problem needs numbers and a target (no countdown record and no data row)")
    truth = row.get("reward_model", {}).get("ground_truth") if isinstance(row.get("reward_model"), Mapping) else None
    if isinstance(truth, Mapping) and "numbers" in truth and "target" in truth:
        numbers, target, where = truth["numbers"], truth["target"], "reward_model.ground_truth"
    elif "nums" in row and "target" in row:
        numbers, target, where = row["nums"], row["target"], "nums/target"
    else:
        raise ValueError("a countdown row needs 'nums' and 'target' columns or reward_model.ground_truth with "
                         f"'numbers' and 'target' (row has keys: {', '.join(sorted(map(str, row)))})")
    if isinstance(numbers, (str, bytes)) or not hasattr(numbers, "__iter__"):
        raise ValueError(f"{where}: the numbers must be a list of integers, got {numbers!r:.60}")
    numbers = tuple(_as_int(n, f"{where}: a number") for n in numbers)
    if not numbers or any(n < 0 for n in numbers):
        raise ValueError(f"{where}: the numbers must be a non-empty list of non-negative integers, got {list(numbers)}")
    return numbers, _as_int(target, f"{where}: the target")
