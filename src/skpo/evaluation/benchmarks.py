"""Benchmarks: what to load, how to prompt, how to score.

A :class:`BenchmarkSpec` names a JSONL file (``.jsonl`` or ``.jsonl.gz``), the columns that hold
the question and the gold answer, a verifier kind and a prompt template. Columns are mapped
by configuration, never guessed from the file name, so any file in the same JSONL form
(AIME25, OlympiadBench, Minerva-Math, ...) is evaluated by writing a spec for it
(:func:`load_spec_file`).

Verifier kinds:

========  ====================================================================================
math      :func:`skpo.rewards.math.verify_math_batch` against the answer column (LaTeX string
          or number).
gsm8k     the same, with the gold read from a GSM8K ``#### N`` answer field
          (:func:`skpo.rewards.math.gold_from_gsm8k`); a plain number is accepted too.
choice    multiple choice: the question is shown with its options lettered ``A.``, ``B.``, …;
          :func:`extract_choice` reads the letter from the completion; the gold column is an
          option index (0-based) or a letter.
code      HumanEval-style: the prompt column is a function head, the completion its body (or,
          from a chat model, a fenced code block); scored by running the row's ``test`` with
          ``check(entry_point)`` in the sandbox (:func:`skpo.rewards.code.verify_humaneval_batch`).
arith     the synthetic chained-arithmetic task: problems from
          :func:`skpo.tasks.arith.heldout_problems` (no file), exact checks from
          :mod:`skpo.rewards.arith`.
========  ====================================================================================

Templates substitute ``{question}`` only — with :meth:`str.replace`, not :meth:`str.format`, so
the LaTeX braces of ``\\boxed{}`` need no escaping.

The loader (:func:`load_problems`) keeps every row: a row that is not a JSON object, lacks a
mapped column or holds a value of the wrong type raises :class:`BenchmarkDataError` naming the
file, the row number (1-based, counting data rows), its line number and the key. Blank lines
carry no data and are skipped (line numbers stay exact).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from skpo.paths import benchmark_dir
from skpo.jsonl import read_jsonl as _read_jsonl
from skpo.rewards.arith import check_answer, parse_answer
from skpo.rewards.base import Verdict
from skpo.rewards.math import gold_from_gsm8k
from skpo.tasks.arith import ArithConfig, ArithProblem, heldout_problems

__all__ = [
    "BUILTIN_BENCHMARKS",
    "BenchmarkDataError",
    "BenchmarkSpec",
    "Problem",
    "VerifierKind",
    "code_for_humaneval",
    "extract_choice",
    "get_spec",
    "load_problems",
    "load_spec_file",
    "read_jsonl",
    "score_completions",
]

VerifierKind = Literal["math", "gsm8k", "code", "choice", "arith"]
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

MATH_TEMPLATE = "{question}\nPlease reason step by step, and put your final answer within \\boxed{}."
CHOICE_TEMPLATE = (
    "{question}\n\nAnswer with the letter of the correct option. "
    "End your response with a line of the form \"Answer: X\", where X is the letter."
)
CODE_CHAT_TEMPLATE = (
    "Complete the following Python function. Reply with the whole function in one "
    "```python code block.\n\n```python\n{question}```"
)
# Codex-style stop strings: the end of the function body when a base model continues the code.
CODE_STOP = ("\nclass ", "\ndef ", "\n#", "\nif __name__", "\nprint(")


class BenchmarkDataError(ValueError):
    """A benchmark file or row that cannot be used; the message names file, row and key."""


class BenchmarkSpec(BaseModel):
    """How to load, prompt and score one benchmark.

    Attributes:
        name: short name (``math500``), used in tables and result keys.
        verifier: ``math`` | ``gsm8k`` | ``code`` | ``choice`` | ``arith``.
        path: the JSONL(.gz) file; a relative path is taken under
            :func:`skpo.paths.benchmark_dir`. ``None`` only for ``arith``.
        prompt_column: the row key holding the question (code: the function head).
        answer_column: the row key holding the gold answer; ``None`` for ``code`` and ``arith``.
        choices_column: ``choice`` only: the row key holding the list of options.
        id_column: optional row key holding a problem id (default: the row number).
        extra_columns: further keys every row must have (``code``: ``test``, ``entry_point``).
        template: the prompt text with a ``{question}`` placeholder: the whole prompt for a
            tokenizer without a chat template, the user message for one with a chat template.
        chat_template: a different user-message template for chat models (default: ``template``).
        stop: stop strings used with the plain template (a base model's end of answer).
        max_new_tokens: default generation budget (``arith``: derived from the problems).
        n_problems: ``arith`` only: size of the held-out set.
        arith: ``arith`` only: the task's difficulty (default :class:`ArithConfig`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    verifier: VerifierKind
    path: str | None = None
    prompt_column: str = "problem"
    answer_column: str | None = "answer"
    choices_column: str | None = None
    id_column: str | None = None
    extra_columns: tuple[str, ...] = ()
    template: str = "{question}"
    chat_template: str | None = None
    stop: tuple[str, ...] = ()
    max_new_tokens: int | None = 1024
    n_problems: int = 200
    arith: ArithConfig | None = None

    @field_validator("template", "chat_template")
    @classmethod
    def _has_placeholder(cls, value: str | None) -> str | None:
        if value is not None and "{question}" not in value:
            raise ValueError("a template must contain the placeholder {question}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BenchmarkSpec:
        if self.verifier == "arith":
            return self
        if self.path is None:
            raise ValueError(f"benchmark {self.name!r}: verifier {self.verifier!r} needs a path")
        if self.verifier in ("math", "gsm8k", "choice") and self.answer_column is None:
            raise ValueError(f"benchmark {self.name!r}: verifier {self.verifier!r} needs answer_column")
        if self.verifier == "choice" and self.choices_column is None:
            raise ValueError(f"benchmark {self.name!r}: verifier 'choice' needs choices_column")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"benchmark {self.name!r}: max_new_tokens must be >= 1")
        return self

    def resolved_path(self) -> Path:
        """The data file as an absolute path (relative paths live under ``benchmark_dir()``)."""
        if self.path is None:
            raise ValueError(f"benchmark {self.name!r} has no data file")
        path = Path(self.path).expanduser()
        return path if path.is_absolute() else benchmark_dir() / path

    def user_template(self, chat: bool) -> str:
        """The template for a chat model (``chat=True``) or a plain prompt."""
        return (self.chat_template or self.template) if chat else self.template

    def render(self, question: str, chat: bool = False) -> str:
        """The prompt (or user message) for ``question``."""
        return self.user_template(chat).replace("{question}", question)


BUILTIN_BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in [
        BenchmarkSpec(
            name="math500", verifier="math", path="math500.jsonl", prompt_column="problem",
            answer_column="answer", id_column="unique_id", template=MATH_TEMPLATE, max_new_tokens=1024,
        ),
        BenchmarkSpec(
            name="aime24", verifier="math", path="aime24.jsonl", prompt_column="problem",
            answer_column="answer", id_column="id", template=MATH_TEMPLATE, max_new_tokens=2048,
        ),
        BenchmarkSpec(
            name="amc23", verifier="math", path="amc23.jsonl", prompt_column="problem",
            answer_column="answer", id_column="id", template=MATH_TEMPLATE, max_new_tokens=2048,
        ),
        BenchmarkSpec(
            name="gsm8k", verifier="gsm8k", path="gsm8k.jsonl", prompt_column="question",
            answer_column="answer", id_column="idx", template=MATH_TEMPLATE, max_new_tokens=512,
        ),
        BenchmarkSpec(
            name="mmlu_stem", verifier="choice", path="mmlu_stem.jsonl", prompt_column="question",
            answer_column="answer", choices_column="choices", template=CHOICE_TEMPLATE, max_new_tokens=512,
        ),
        BenchmarkSpec(
            name="humaneval", verifier="code", path="humaneval.jsonl.gz", prompt_column="prompt",
            answer_column=None, id_column="task_id", extra_columns=("test", "entry_point"),
            template="{question}", chat_template=CODE_CHAT_TEMPLATE, stop=CODE_STOP, max_new_tokens=512,
        ),
        BenchmarkSpec(name="arith", verifier="arith", answer_column=None, max_new_tokens=None, n_problems=200),
    ]
}


def get_spec(name: str, extra: Mapping[str, BenchmarkSpec] | None = None) -> BenchmarkSpec:
    """A built-in spec by name (or one of ``extra``); the error lists the known names."""
    known = {**BUILTIN_BENCHMARKS, **(extra or {})}
    if name not in known:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def load_spec_file(path: str | Path) -> list[BenchmarkSpec]:
    """Specs from a JSON or YAML file: one spec object, or a list of them.

    Relative ``path`` entries inside the file are resolved against the file's directory.
    Unknown keys and bad values raise ``pydantic.ValidationError`` naming the key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark spec file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    items = data if isinstance(data, list) else [data]
    specs = []
    for item in items:
        if not isinstance(item, dict):
            raise BenchmarkDataError(f"{path}: every spec must be a mapping, got {type(item).__name__}")
        spec = BenchmarkSpec.model_validate(item)
        if spec.path is not None and not Path(spec.path).expanduser().is_absolute():
            spec = spec.model_copy(update={"path": str((path.parent / spec.path).resolve())})
        specs.append(spec)
    return specs


# ----------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    """One evaluation problem.

    Attributes:
        index: 0-based position in the benchmark (data row order).
        id: the id column's value, or the row number as a string.
        question: the text put into ``{question}`` (choice: stem plus lettered options).
        gold: the gold answer as a string (choice: the letter; code: ``""``).
        row: the original JSON row (code scoring reads ``test`` / ``entry_point`` from it).
        line: line number in the file (``None`` for generated problems).
        choices: the options, for ``choice``.
        arith: the synthetic problem, for ``arith``.
    """

    index: int
    id: str
    question: str
    gold: str
    row: Mapping[str, Any] = field(default_factory=dict, repr=False)
    line: int | None = None
    choices: tuple[str, ...] | None = None
    arith: ArithProblem | None = None


def read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """All rows of a JSONL(.gz) benchmark file as ``(line_number, row)`` pairs (see
    :func:`skpo.jsonl.read_jsonl`); bad lines raise :class:`BenchmarkDataError`."""
    return _read_jsonl(path, BenchmarkDataError, what="benchmark file")


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _gold(spec: BenchmarkSpec, row: Mapping[str, Any], where: str) -> tuple[str, tuple[str, ...] | None]:
    """The gold answer (and options for ``choice``) of a row, validated."""
    if spec.verifier == "code":
        return "", None
    key = spec.answer_column
    assert key is not None
    if key not in row:
        raise BenchmarkDataError(f"{where}: missing key {key!r} (row has keys: {', '.join(sorted(row))})")
    value = row[key]
    if spec.verifier == "choice":
        ckey = spec.choices_column
        assert ckey is not None
        if ckey not in row:
            raise BenchmarkDataError(f"{where}: missing key {ckey!r} (row has keys: {', '.join(sorted(row))})")
        raw = row[ckey]
        if not isinstance(raw, list) or not 2 <= len(raw) <= len(LETTERS):
            raise BenchmarkDataError(f"{where}: key {ckey!r} must be a list of 2 to {len(LETTERS)} options, got {raw!r:.80}")
        if any(isinstance(c, (dict, list)) or c is None for c in raw):
            raise BenchmarkDataError(f"{where}: key {ckey!r} must hold text options, got {raw!r:.80}")
        choices = tuple(str(c) for c in raw)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
            return LETTERS[value], choices
        if isinstance(value, str) and value.strip().upper() in LETTERS[: len(choices)] and len(value.strip()) == 1:
            return value.strip().upper(), choices
        raise BenchmarkDataError(
            f"{where}: key {key!r} must be an option index in [0, {len(choices) - 1}] or a letter "
            f"A-{LETTERS[len(choices) - 1]}, got {value!r}"
        )
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BenchmarkDataError(f"{where}: key {key!r} must be a string or a number, got {value!r:.80}")
    if isinstance(value, (int, float)):
        return _number_text(value), None
    if not value.strip():
        raise BenchmarkDataError(f"{where}: key {key!r} is empty")
    if spec.verifier == "gsm8k":
        if "####" in value:
            try:
                return gold_from_gsm8k(value), None
            except ValueError as err:
                raise BenchmarkDataError(f"{where}: key {key!r}: {err}") from None
        if re.fullmatch(r"\s*-?[\d,]*\.?\d+\s*", value):
            return value.strip().replace(",", ""), None
        raise BenchmarkDataError(f"{where}: key {key!r} has no '#### N' final line and is not a number")
    return value.strip(), None


def _problem_from_row(spec: BenchmarkSpec, index: int, line: int, row: Mapping[str, Any], path: Path) -> Problem:
    where = f"{path}: row {index + 1} (line {line})"
    needed = [spec.prompt_column, *spec.extra_columns]
    for key in needed:
        if key not in row:
            raise BenchmarkDataError(f"{where}: missing key {key!r} (row has keys: {', '.join(sorted(row))})")
    question = row[spec.prompt_column]
    if not isinstance(question, str) or not question.strip():
        raise BenchmarkDataError(f"{where}: key {spec.prompt_column!r} must be a non-empty string, got {question!r:.80}")
    for key in spec.extra_columns:
        if not isinstance(row[key], str):
            raise BenchmarkDataError(f"{where}: key {key!r} must be a string, got {row[key]!r:.80}")
    gold, choices = _gold(spec, row, where)
    if choices is not None:
        question = question.rstrip() + "\n\n" + "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    if spec.id_column is not None:
        if spec.id_column not in row:
            raise BenchmarkDataError(f"{where}: missing key {spec.id_column!r} (row has keys: {', '.join(sorted(row))})")
        pid = str(row[spec.id_column])
    else:
        pid = str(index)
    return Problem(index=index, id=pid, question=question, gold=gold, row=dict(row), line=line, choices=choices)


def load_problems(spec: BenchmarkSpec, limit: int | None = None) -> list[Problem]:
    """The problems of ``spec``: every row of its file, validated, in file order.

    ``limit`` keeps the first ``limit`` problems (all rows are still validated, so a bad
    file fails the same way whatever the limit). For ``arith``: the first ``limit`` (else
    ``spec.n_problems``) problems of the fixed held-out set.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if spec.verifier == "arith":
        n = limit if limit is not None else spec.n_problems
        return [
            Problem(index=i, id=p.question, question=p.question, gold=str(p.answer), arith=p)
            for i, p in enumerate(heldout_problems(spec.arith or ArithConfig(), n))
        ]
    path = spec.resolved_path()
    rows = read_jsonl(path)
    if not rows:
        raise BenchmarkDataError(f"{path}: no rows")
    problems = [_problem_from_row(spec, i, line, row, path) for i, (line, row) in enumerate(rows)]
    return problems if limit is None else problems[:limit]


# ----------------------------------------------------------------------------- scoring

_BOXED_LETTER = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*\(?([A-Z])\)?\s*\}?\s*\}")
_ANCHORED_LETTER = re.compile(
    r"(?i:answer|option|choice)(?i:\s+is)?\s*[:：]?\s*(?:\*\*)?\s*[\(\[]?([A-Z])(?![A-Za-z0-9])"
)
_LONE_LETTER = re.compile(r"^\s*(?:\*\*)?\(?([A-Z])\)?[.:)]?(?:\*\*)?\s*$", re.MULTILINE)
_LEADING_LETTER = re.compile(r"^\s*\(?([A-Z])[.:)]\s")


def extract_choice(text: str, n_choices: int = 4) -> str | None:
    """The option letter a completion chose, or ``None``.

    Looked for in this order (the last match of a rule wins; letters beyond ``n_choices``
    are ignored): ``\\boxed{B}``; an anchored phrase ("Answer: B", "the answer is (B)",
    "option B"); a line holding only the letter ("B", "(B)", "B."); a completion that starts
    with "B." / "(B)". A bare capital letter elsewhere in prose (the word "A") never counts.
    """
    allowed = LETTERS[:n_choices]
    for pattern in (_BOXED_LETTER, _ANCHORED_LETTER, _LONE_LETTER):
        hits = [m.group(1) for m in pattern.finditer(text) if m.group(1) in allowed]
        if hits:
            return hits[-1]
    match = _LEADING_LETTER.match(text)
    if match and match.group(1) in allowed:
        return match.group(1)
    return None


_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def code_for_humaneval(completion: str, problem: Problem, stop: Sequence[str] = ()) -> str:
    """The text to append to a HumanEval prompt for ``completion``.

    - A fenced code block (chat models): its content; when it redefines the entry point, it
      is appended after a newline (the later definition replaces the prompt's stub).
    - Otherwise a body continuation (base models): cut at the first stop string, since the
      engine keeps the stop string that ended the sample.
    """
    match = _FENCE.search(completion)
    if match:
        code = match.group(1)
        entry = str(problem.row.get("entry_point", ""))
        if entry and re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE):
            return "\n" + code
        return code
    cut = len(completion)
    for s in stop:
        pos = completion.find(s)
        if pos != -1:
            cut = min(cut, pos)
    return completion[:cut]


def score_completions(
    spec: BenchmarkSpec,
    problems: Sequence[Problem],
    completions: Sequence[Sequence[str]],
    *,
    plain_prompt: bool = True,
    math_timeout_s: float = 5.0,
    code_workers: int = 4,
) -> list[list[Verdict]]:
    """Verdicts ``[N][k]`` for completions ``[N][k]`` of ``problems`` under ``spec``'s verifier.

    Args:
        plain_prompt: whether the completions answer the plain template (code: then the
            spec's stop strings are cut off before running the code).
        math_timeout_s: per-answer bound of the math verifier.
        code_workers: sandboxes run at once for ``code``.
    """
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completion lists")
    flat = [(i, text) for i, row in enumerate(completions) for text in row]
    kind = spec.verifier
    if kind in ("math", "gsm8k"):
        from skpo.rewards.math import verify_math_batch

        verdicts = verify_math_batch([t for _, t in flat], [problems[i].gold for i, _ in flat], math_timeout_s)
    elif kind == "choice":
        verdicts = []
        for i, text in flat:
            letter = extract_choice(text, len(problems[i].choices or ()))
            if letter is None:
                verdicts.append(Verdict.wrong("no option letter found"))
            elif letter == problems[i].gold:
                verdicts.append(Verdict.right("correct", letter))
            else:
                verdicts.append(Verdict.wrong("wrong option", letter))
    elif kind == "code":
        from skpo.rewards.code import verify_humaneval_batch

        stop = spec.stop if plain_prompt else ()
        bodies = [code_for_humaneval(t, problems[i], stop) for i, t in flat]
        verdicts = verify_humaneval_batch(bodies, [problems[i].row for i, _ in flat], max_workers=code_workers)
    elif kind == "arith":
        verdicts = []
        for i, text in flat:
            problem = problems[i].arith
            assert problem is not None
            answer = parse_answer(text)
            if answer is None:
                verdicts.append(Verdict.wrong("no answer line"))
            elif check_answer(text, problem):
                verdicts.append(Verdict.right("correct", str(answer)))
            else:
                verdicts.append(Verdict.wrong("wrong answer", str(answer)))
    else:  # pragma: no cover - the spec's Literal type rules this out
        raise ValueError(f"unknown verifier kind {kind!r}")
    out: list[list[Verdict]] = []
    pos = 0
    for row in completions:
        out.append(list(verdicts[pos : pos + len(row)]))
        pos += len(row)
    return out
