"""One dataset spec for training data and benchmarks: what to load, how to prompt, how to score.

The whole story (sources, readings, how each step runs): ``docs/evaluation.md``, section "Notes from skpo.tasks.dataset"."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from skpo.errors import UserError
from skpo.jsonl import read_jsonl as _read_jsonl
from skpo.paths import benchmark_dir
from skpo.rewards.choice import LETTERS
from skpo.rewards.math import gold_from_gsm8k
from skpo.rewards.registry import REWARDS
from skpo.tasks.arith import ArithConfig, ArithProblem, heldout_problems
from skpo.tasks.countdown import CountdownConfig, CountdownProblem
from skpo.tasks.countdown import heldout_problems as countdown_heldout
from skpo.tasks.prompts import has_chat_template, prompt_ids
from skpo.tasks.templates import plain_input_ids

if TYPE_CHECKING:
    from typing_extensions import Self  # (typing.Self from Python 3.11)

__all__ = [
    "ANSWER_CANDIDATES",
    "DatasetError",
    "DatasetSpec",
    "EncodedProblems",
    "PROMPT_CANDIDATES",
    "Problem",
    "arith_records",
    "countdown_records",
    "sniff_reward",
    "encode_problems",
    "last_boxed",
    "load_problems",
    "load_spec_file",
    "prompt_format",
    "prompt_messages",
    "read_rows",
    "MATH_TEMPLATE",
    "data_file_spec",
    "is_data_path",
    "heldout_size",
    "split_heldout",
]

MATH_TEMPLATE = "{question}\nPlease reason step by step, and put your final answer within \\boxed{}."
DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet", ".arrow")

PROMPT_CANDIDATES = ("prompt", "problem", "question", "query", "input", "instruction", "messages")
ANSWER_CANDIDATES = (
    "answer", "final_answer", "ground_truth", "reward_model.ground_truth", "gold", "target",
    "expected_answer", "label", "solution",
)


class DatasetError(UserError, ValueError):
    """A data file or row that cannot be used; the message names file, row and key."""


class DatasetSpec(BaseModel):
    """How to load, prompt and score one dataset (training data or a benchmark).

    Attributes:
        name: short name (``math500``), used in tables and metric keys (default: file stem).
        path: the data file (``.jsonl``, ``.jsonl.gz``, ``.parquet``); a relative path of a
            built-in benchmark is taken under :func:`skpo.paths.benchmark_dir`. ``None`` only
            for ``arith``.
        format: ``auto`` (by suffix; a folder by what it holds), ``jsonl``, ``parquet`` or ``arrow``.
        reward: a name in :data:`skpo.rewards.registry.REWARDS` (``math``, ``gsm8k``,
            ``choice``, ``code``, ``arith``) or ``module:function`` (alias: ``verifier``).
        prompt_column, answer_column, answer_format, id_column, context_column, system_column,
            choices_column: see the module docstring (aliases ``prompt_key``, ``answer_key``).
        extra_columns: further keys every row must have (``code``: ``test``, ``entry_point``).
        template: the prompt text with a ``{question}`` placeholder: the user message for a
            chat model, the whole prompt otherwise (alias ``prompt_template``).
        chat_template: a different user-message template for chat models (default: ``template``).
        system_prompt: a system message for every row (``system_column`` overrides it per row).
        stop: stop strings used with the plain template (a base model's end of answer).
        max_new_tokens: default generation budget (``arith``: derived from the problems).
        max_prompt_tokens: longest prompt in tokens; longer ones are dropped (``overlong:
            drop``) or refused (``overlong: error``) when encoded. ``None``: no limit.
        n_problems: the synthetic tasks only (``arith``; ``countdown`` without a path): size
            of the held-out set.
        arith: ``arith`` only: the task's difficulty (default :class:`ArithConfig`).
        countdown: ``countdown`` without a path only: the synthetic task's knobs (default
            :class:`~skpo.tasks.CountdownConfig`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    # how messages name this spec's keys: a spec file's own ``prompt_column``; training data's
    # ``data.prompt_column`` (the run config's section)
    key_prefix: ClassVar[str] = ""

    name: str = ""
    path: str | None = None
    format: Literal["auto", "jsonl", "parquet", "arrow"] = "auto"
    reward: str = Field("math", validation_alias=AliasChoices("reward", "verifier"))
    prompt_column: str | None = Field(None, validation_alias=AliasChoices("prompt_column", "prompt_key"))
    answer_column: str | None = Field(None, validation_alias=AliasChoices("answer_column", "answer_key"))
    answer_format: Literal["auto", "plain", "boxed", "gsm8k"] = "auto"
    id_column: str | None = None
    context_column: str | None = None
    system_column: str | None = None
    choices_column: str | None = None
    extra_columns: tuple[str, ...] = ()
    template: str = Field("{question}", validation_alias=AliasChoices("template", "prompt_template"))
    chat_template: str | None = None
    system_prompt: str | None = None
    stop: tuple[str, ...] = ()
    max_new_tokens: int | None = Field(1024, ge=1)
    max_prompt_tokens: int | None = Field(None, ge=1)
    overlong: Literal["drop", "error"] = "drop"
    n_problems: int = Field(200, ge=1)
    arith: ArithConfig | None = None
    countdown: CountdownConfig | None = None

    @property
    def verifier(self) -> str:
        """The reward's name (the older word for it)."""
        return self.reward

    @field_validator("template", "chat_template")
    @classmethod
    def _has_placeholder(cls, value: str | None) -> str | None:
        if value is not None and "{question}" not in value:
            raise ValueError("a template must contain the placeholder {question}")
        return value

    @field_validator("reward")
    @classmethod
    def _known_reward(cls, value: str) -> str:
        if value not in REWARDS and ":" not in value:
            raise ValueError(f"unknown reward {value!r}; registered: {', '.join(sorted(REWARDS))}, or 'module:function'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        return self._check_spec()

    def _check_spec(self) -> Self:
        if not self.name and self.path:
            stem = Path(self.path).name
            for suffix in (".gz", ".jsonl", ".parquet", ".json"):
                stem = stem.removesuffix(suffix)
            object.__setattr__(self, "name", stem)
        if self.synthetic:
            return self
        if self.path is None:
            raise ValueError(f"dataset {self.name or '?'!r}: reward {self.reward!r} needs a path")
        if self.reward == "choice" and self.choices_column is None:
            raise ValueError(f"dataset {self.name!r}: reward 'choice' needs choices_column")
        return self

    # ------------------------------------------------------------------ helpers
    @property
    def synthetic(self) -> str | None:
        """``"arith"`` or ``"countdown"`` when the spec is an embedded task's held-out set (no
        file; countdown with a path is a data file scored by the countdown reward), else ``None``."""
        if self.reward == "arith":
            return "arith"
        if self.reward == "countdown" and self.path is None:
            return "countdown"
        return None

    def resolved_path(self) -> Path:
        """The data file as an absolute path (relative paths live under ``benchmark_dir()``)."""
        if self.path is None:
            raise ValueError(f"dataset {self.name!r} has no data file")
        path = Path(self.path).expanduser()
        return path if path.is_absolute() or path.exists() else benchmark_dir() / path

    def user_template(self, chat: bool) -> str:
        """The template for a chat model (``chat=True``) or a plain prompt."""
        return (self.chat_template or self.template) if chat else self.template

    def render(self, question: str, chat: bool = False, context: str | None = None) -> str:
        """The prompt (or user message) for ``question`` (and ``context``)."""
        template = self.user_template(chat)
        if context is not None and "{context}" not in template:
            template = "{context}\n\n" + template
        return template.replace("{context}", context or "").replace("{question}", question)


# Benchmarks and training data are one thing; the old name stays for readers of older code.
BenchmarkSpec = DatasetSpec


def data_file_spec(path: str | Path) -> DatasetSpec:
    """A data file or folder read as training reads ``data.path`` with no other ``data.*`` key
    set (the run config's ``data`` section has the same defaults): the prompt and answer columns
    found by name, the math reward and the math template."""
    return DatasetSpec(path=str(path), template=MATH_TEMPLATE, reward="math")


def is_data_path(name: str) -> bool:
    """``name`` is a data file or folder (it exists, or ends like one), not a benchmark name."""
    return Path(name).expanduser().exists() or name.endswith(DATA_SUFFIXES)


@dataclass(frozen=True)
class Problem:
    """One problem (a training prompt or a benchmark item).

    Attributes:
        index: 0-based position in the file (data row order).
        id: the id column's value, or the row number as a string.
        question: the text put into ``{question}`` (choice: stem plus lettered options; a
            chat-list prompt: its last user message).
        gold: the gold answer as a string (choice: the letter; code: ``""``); a list of
            acceptable answers gives the first here and all in :attr:`golds`.
        row: the original row (user rewards and the code verifier read other columns from it).
        line: line number in a JSONL file (``None`` otherwise).
        choices: the options, for ``choice``.
        arith: the synthetic problem, for ``arith``.
        countdown: the synthetic problem, for the ``countdown`` task.
        messages: the conversation of a chat-list prompt, as given.
        context: the context column's text.
        system: the system message (column or spec).
        all_golds: every acceptable answer.
    """

    index: int
    id: str
    question: str
    gold: str
    row: Mapping[str, Any] = field(default_factory=dict, repr=False)
    line: int | None = None
    choices: tuple[str, ...] | None = None
    arith: ArithProblem | None = None
    countdown: CountdownProblem | None = None
    messages: tuple[Mapping[str, Any], ...] | None = None
    context: str | None = None
    system: str | None = None
    all_golds: tuple[str, ...] = ()

    @property
    def golds(self) -> tuple[str, ...]:
        """All acceptable gold answers."""
        return self.all_golds or (self.gold,)


# ----------------------------------------------------------------------------- reading files


def read_rows(path: str | Path, format: str = "auto") -> list[tuple[int | None, dict[str, Any]]]:
    """All rows of a data file as ``(line or None, row)``, in file order: JSONL(.gz), Parquet, an
    Arrow file, or a folder — one saved by Hugging Face ``datasets`` (``save_to_disk``: a
    ``Dataset``, or a ``DatasetDict``, whose ``train`` split is read), or of Parquet / Arrow /
    JSONL shards (a downloaded dataset repository; its ``train`` shards when splits are named)."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    fmt = format
    if fmt == "auto":
        fmt = {".parquet": "parquet", ".arrow": "arrow"}.get(path.suffix, "jsonl")
    if fmt == "jsonl":
        return list(_read_jsonl(path, DatasetError, what="data file"))
    import pyarrow as pa  # heavy: loaded only for Parquet / Arrow files
    import pyarrow.parquet as pq

    try:
        if fmt == "parquet":
            table = pq.read_table(path)
        else:  # datasets writes Arrow streams; the file format is accepted too
            try:
                with pa.memory_map(str(path)) as source:
                    table = pa.ipc.open_stream(source).read_all()
            except pa.ArrowInvalid:
                with pa.memory_map(str(path)) as source:
                    table = pa.ipc.open_file(source).read_all()
        rows = table.to_pylist()
    except Exception as err:  # pyarrow raises its own error types for damaged files
        raise DatasetError(f"{path}: cannot read as {'Parquet' if fmt == 'parquet' else 'Arrow'}: {err}") from None
    return [(None, row) for row in rows]


def _read_folder(folder: Path) -> list[tuple[int | None, dict[str, Any]]]:
    """A data folder (see :func:`read_rows`)."""
    dict_file = folder / "dataset_dict.json"
    if dict_file.is_file():  # DatasetDict.save_to_disk: one folder per split
        try:
            splits = list(json.loads(dict_file.read_text()).get("splits", []))
        except (ValueError, AttributeError) as err:
            raise DatasetError(f"{dict_file}: not a datasets split list ({err})") from None
        split = "train" if "train" in splits else (splits[0] if splits else None)
        if split is None or not (folder / split).is_dir():
            raise DatasetError(f"{folder}: a datasets DatasetDict without a readable split (splits: {splits})")
        return _read_folder(folder / split)
    state = folder / "state.json"
    if state.is_file():  # Dataset.save_to_disk: Arrow shards listed in state.json
        try:
            files = [folder / f["filename"] for f in json.loads(state.read_text())["_data_files"]]
        except (ValueError, KeyError, TypeError) as err:
            raise DatasetError(f"{state}: not a datasets state file ({err})") from None
    else:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and (
            p.suffix in (".parquet", ".arrow", ".jsonl") or p.name.endswith(".jsonl.gz")))
        named = [p for p in files if "train" in p.relative_to(folder).as_posix()]
        if named and len(named) < len(files):  # split shards: the training split
            files = named
    if not files:
        raise DatasetError(f"{folder}: a folder with no data files (Parquet, Arrow or JSONL shards, or a datasets "
                           "save_to_disk folder)")
    rows: list[tuple[int | None, dict[str, Any]]] = []
    for file in files:
        rows += [(None, row) for _, row in read_rows(file)]
    return rows


_MISSING = object()


def _get(row: Mapping[str, Any], key: str) -> Any:
    """``row[key]``, or the nested value of a dotted key; ``_MISSING`` when absent."""
    if key in row:
        return row[key]
    node: Any = row
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _pick_column(row: Mapping[str, Any], candidates: Sequence[str]) -> str | None:
    return next((c for c in candidates if _get(row, c) is not _MISSING), None)


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{…}`` (or ``\\fbox{…}``) in ``text``, braces matched."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start : i - 1].strip()
    return None


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _read_answer(spec: DatasetSpec, value: Any, key: str, where: str) -> str:
    """One gold answer, read per ``answer_format`` (and the reward: gsm8k reads ``####``)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DatasetError(f"{where}: key {key!r} must be a string or a number (or a list of them), got {value!r:.80}")
    if isinstance(value, float) and not math.isfinite(value):  # a NaN from Parquet/pandas is no answer
        raise DatasetError(f"{where}: key {key!r} is {value!r}, not an answer")
    if isinstance(value, (int, float)):
        return _number_text(value)
    if not value.strip():
        raise DatasetError(f"{where}: key {key!r} is empty")
    if value.strip().lower() == "nan":  # how pandas writes a missing value
        raise DatasetError(f"{where}: key {key!r} is {value.strip()!r}, not an answer")
    fmt = spec.answer_format
    if fmt == "auto":
        fmt = "boxed" if "\\boxed" in value or "\\fbox" in value else "gsm8k" if "####" in value else "plain"
    if fmt == "boxed":
        boxed = last_boxed(value)
        if boxed is None or not boxed:
            raise DatasetError(f"{where}: key {key!r} has no \\boxed{{...}} answer")
        return boxed
    if fmt == "gsm8k":
        try:
            return gold_from_gsm8k(value)
        except ValueError as err:
            raise DatasetError(f"{where}: key {key!r}: {err}") from None
    if spec.reward == "gsm8k" and not re.fullmatch(r"\s*-?[\d,]*\.?\d+\s*", value):
        raise DatasetError(f"{where}: key {key!r} has no '#### N' final line and is not a number")
    return value.strip().replace(",", "") if spec.reward == "gsm8k" else value.strip()


def _answers(spec: DatasetSpec, row: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = _get(row, key)
    if value is _MISSING:
        raise DatasetError(f"{where}: missing key {key!r} (row has keys: {', '.join(sorted(row))})")
    if isinstance(value, (list, tuple)):
        if not value:
            raise DatasetError(f"{where}: key {key!r} is an empty list of answers")
        return tuple(_read_answer(spec, v, key, where) for v in value)
    return (_read_answer(spec, value, key, where),)


def _messages(value: Any, key: str, where: str) -> tuple[Mapping[str, Any], ...]:
    if not value or not all(isinstance(m, Mapping) and "role" in m and "content" in m for m in value):
        raise DatasetError(f"{where}: key {key!r} must be a string or a list of {{'role', 'content'}} messages, got {value!r:.80}")
    for m in value:
        if not isinstance(m["content"], str):
            raise DatasetError(f"{where}: key {key!r}: message content must be text, got {m['content']!r:.60}")
    return tuple(dict(m) for m in value)


def _text_column(row: Mapping[str, Any], key: str | None, where: str) -> str | None:
    if key is None:
        return None
    value = _get(row, key)
    if value is _MISSING:
        raise DatasetError(f"{where}: missing key {key!r} (row has keys: {', '.join(sorted(row))})")
    if not isinstance(value, str):
        raise DatasetError(f"{where}: key {key!r} must be a string, got {value!r:.80}")
    return value


def _problem_from_row(spec: DatasetSpec, columns: dict[str, str | None], index: int, line: int | None,
                      row: Any, path: Path) -> Problem:
    where = f"{path}: row {index + 1}" + (f" (line {line})" if line is not None else "")
    if not isinstance(row, Mapping):
        raise DatasetError(f"{where}: expected an object, got {type(row).__name__}")
    pkey = columns["prompt"]
    assert pkey is not None
    value = _get(row, pkey)
    if value is _MISSING:
        raise DatasetError(f"{where}: missing key {pkey!r} (row has keys: {', '.join(sorted(row))})")
    messages = None
    if isinstance(value, str):
        if not value.strip():
            raise DatasetError(f"{where}: key {pkey!r} must be a non-empty string, got {value!r:.80}")
        question = value
    elif isinstance(value, (list, tuple)):
        messages = _messages(value, pkey, where)
        users = [m["content"] for m in messages if m["role"] == "user"]
        question = users[-1] if users else messages[-1]["content"]
    else:
        raise DatasetError(f"{where}: key {pkey!r} must be a non-empty string or a chat list, got {value!r:.80}")
    for key in spec.extra_columns:
        _text_column(row, key, where)
    golds: tuple[str, ...] = ("",)
    choices = None
    if spec.reward == "choice":
        golds, choices = _choice_gold(spec, row, columns["answer"], where)
        if messages is None:
            question = question.rstrip() + "\n\n" + "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    elif columns["answer"] is not None:
        golds = _answers(spec, row, columns["answer"], where)
    if spec.id_column is not None:
        pid = _get(row, spec.id_column)
        if pid is _MISSING:
            raise DatasetError(f"{where}: missing key {spec.id_column!r} (row has keys: {', '.join(sorted(row))})")
        pid = str(pid)
    else:
        pid = str(index)
    system = _text_column(row, spec.system_column, where) if spec.system_column else spec.system_prompt
    context = _text_column(row, spec.context_column, where)
    return Problem(index=index, id=pid, question=question, gold=golds[0], row=dict(row), line=line, choices=choices,
                   messages=messages, context=context, system=system, all_golds=golds if len(golds) > 1 else ())


def _choice_gold(spec: DatasetSpec, row: Mapping[str, Any], key: str | None, where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    ckey = spec.choices_column
    assert ckey is not None
    if key is None:
        raise DatasetError(f"{where}: reward 'choice' needs an answer column")
    raw = _get(row, ckey)
    if raw is _MISSING:
        raise DatasetError(f"{where}: missing key {ckey!r} (row has keys: {', '.join(sorted(row))})")
    if not isinstance(raw, (list, tuple)) or not 2 <= len(raw) <= len(LETTERS):
        raise DatasetError(f"{where}: key {ckey!r} must be a list of 2 to {len(LETTERS)} options, got {raw!r:.80}")
    if any(isinstance(c, (dict, list)) or c is None for c in raw):
        raise DatasetError(f"{where}: key {ckey!r} must hold text options, got {raw!r:.80}")
    choices = tuple(str(c) for c in raw)
    value = _get(row, key)
    if value is _MISSING:
        raise DatasetError(f"{where}: missing key {key!r} (row has keys: {', '.join(sorted(row))})")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
        return (LETTERS[value],), choices
    if isinstance(value, str) and value.strip().upper() in LETTERS[: len(choices)] and len(value.strip()) == 1:
        return (value.strip().upper(),), choices
    raise DatasetError(
        f"{where}: key {key!r} must be an option index in [0, {len(choices) - 1}] or a letter "
        f"A-{LETTERS[len(choices) - 1]}, got {value!r}"
    )


def resolve_columns(spec: DatasetSpec, first_row: Mapping[str, Any], where: str) -> dict[str, str | None]:
    """The prompt and answer columns to read: the spec's, or found in the first row."""
    if not isinstance(first_row, Mapping):
        raise DatasetError(f"{where}: expected an object, got {type(first_row).__name__}")
    prompt = spec.prompt_column or _pick_column(first_row, PROMPT_CANDIDATES)
    if prompt is None:
        raise DatasetError(
            f"{where}: no prompt column: set {spec.key_prefix}prompt_column (row has keys: {', '.join(sorted(first_row))}; "
            f"looked for {', '.join(PROMPT_CANDIDATES)})"
        )
    entry = REWARDS.get(spec.reward)
    needs_answer = entry.needs_answer if entry is not None else False
    answer = spec.answer_column
    if answer is None and (needs_answer or entry is None):
        answer = _pick_column(first_row, ANSWER_CANDIDATES)
        if answer is None and needs_answer:
            raise DatasetError(
                f"{where}: no answer column for reward {spec.reward!r}: set {spec.key_prefix}answer_column (row has keys: "
                f"{', '.join(sorted(first_row))}; looked for {', '.join(ANSWER_CANDIDATES)})"
            )
    return {"prompt": prompt, "answer": answer}


def arith_records(problems: Sequence[ArithProblem]) -> list[Problem]:
    """``Problem`` records of synthetic problems (id and question: the problem's question; gold:
    its answer), indexed in order — what the ``arith`` benchmark and the runner take."""
    return [Problem(index=i, id=p.question, question=p.question, gold=str(p.answer), arith=p) for i, p in enumerate(problems)]


def countdown_records(problems: Sequence[CountdownProblem]) -> list[Problem]:
    """``Problem`` records of synthetic countdown problems (id and question: the problem's
    question, ``44 19 3 8 -> 75``; gold: the target), indexed in order."""
    return [Problem(index=i, id=p.question, question=p.question, gold=str(p.target), countdown=p)
            for i, p in enumerate(problems)]


def load_problems(spec: DatasetSpec, limit: int | None = None) -> list[Problem]:
    """The problems of ``spec``: every row of its file, validated, in file order.

    ``limit`` keeps the first ``limit`` problems (all rows are still validated, so a bad file
    fails the same way whatever the limit). For ``arith``: the first ``limit`` (else
    ``spec.n_problems``) problems of the fixed held-out set.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if spec.reward == "arith" and spec.path is None:
        n = limit if limit is not None else spec.n_problems
        return arith_records(heldout_problems(spec.arith or ArithConfig(), n))
    if spec.synthetic == "countdown":
        n = limit if limit is not None else spec.n_problems
        return countdown_records(countdown_heldout(spec.countdown or CountdownConfig(), n))
    return load_problems_and_columns(spec, limit)[0]


def load_problems_and_columns(spec: DatasetSpec, limit: int | None = None) -> tuple[list[Problem], dict[str, str | None]]:
    """:func:`load_problems` and the columns it read (``prompt``, ``answer``: given or found;
    the synthetic task: ``{}``)."""
    if spec.synthetic:
        return load_problems(spec, limit), {}
    path = spec.resolved_path()
    rows = read_rows(path, spec.format)
    if not rows:
        raise DatasetError(f"{path}: no rows")
    line0, row0 = rows[0]
    columns = resolve_columns(spec, row0, f"{path}: row 1" + (f" (line {line0})" if line0 is not None else ""))
    problems = [_problem_from_row(spec, columns, i, line, row, path) for i, (line, row) in enumerate(rows)]
    if spec.reward in REWARDS:
        check_reward_columns(problems, REWARDS[spec.reward], path)
    entry = REWARDS.get(spec.reward)
    if entry is not None and entry.check_problem is not None:  # e.g. countdown: numbers and target on every row
        for p in problems:
            try:
                entry.check_problem(p)
            except ValueError as err:
                where = f"{path}: row {p.index + 1}" + (f" (line {p.line})" if p.line is not None else "")
                raise DatasetError(f"{where}: reward {spec.reward!r}: {err}") from None
    return (problems if limit is None else problems[:limit]), columns


def check_reward_columns(problems: Sequence[Problem], reward: Any, path: Path) -> None:
    """Every row holds the columns ``reward`` reads (``needs_columns``; ``code``: ``prompt``,
    ``test``, ``entry_point``), or :class:`DatasetError` names the first row that does not — at
    load, before anything is generated, not as a ``KeyError`` when the answers are scored."""
    needed = tuple(getattr(reward, "needs_columns", ()))
    for problem in problems:
        missing = [c for c in needed if c not in (problem.row or {})]
        if missing:
            where = f"line {problem.line}" if problem.line is not None else f"row {problem.index + 1}"
            raise DatasetError(f"{path}: {where}: reward {reward.name!r} needs the column(s) {missing} "
                               f"(row has keys: {', '.join(sorted(problem.row or {}))})")


# ----------------------------------------------------------------------------- held-out rows

HELDOUT_AUTO_MAX = 100  # data.heldout None: a tenth of the rows, at most this many


def heldout_size(setting: int | None, rows: int) -> int:
    """Rows to hold out of ``rows``: ``setting`` (at most all but one row), or for ``None`` a
    tenth of them, at most :data:`HELDOUT_AUTO_MAX` (none below ten rows)."""
    if setting is None:
        return min(HELDOUT_AUTO_MAX, rows // 10)
    return max(0, min(setting, rows - 1))


def _prompt_digest(problem: Problem) -> str:
    content = [[dict(m) for m in problem.messages] if problem.messages else problem.question, problem.context,
               problem.system]
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def split_heldout(problems: Sequence[Problem], n: int) -> tuple[list[Problem], list[Problem]]:
    """``(training, held out)``: the ``n`` distinct prompts (text, context and system message)
    that hash lowest under SHA-256 are held out, each once, in file order — the same slice in
    every run, whatever the seed, the number of processes or the order of the rows. A row that
    repeats a held-out prompt is left out of both, so no copy of a held-out question trains."""
    if n <= 0:
        return list(problems), []
    digests = [_prompt_digest(p) for p in problems]
    held_digests = set(sorted(set(digests))[:n])
    first = {d: i for i, d in reversed(list(enumerate(digests))) if d in held_digests}
    training = [p for i, p in enumerate(problems) if digests[i] not in held_digests]
    return training, [p for i, p in enumerate(problems) if first.get(digests[i]) == i]


def _looks_like_countdown(row: Mapping[str, Any]) -> bool:
    """A row in TinyZero's / verl's countdown layout: ``nums`` and ``target`` columns, or
    ``reward_model.ground_truth`` holding ``numbers`` and ``target``."""
    if "nums" in row and "target" in row:
        return True
    truth = _get(row, "reward_model.ground_truth")
    return isinstance(truth, Mapping) and "numbers" in truth and "target" in truth


def sniff_reward(path: str | Path, format: str = "auto") -> str | None:
    """The reward a data file's layout names, read off its first row: ``countdown`` for
    TinyZero's / verl's countdown layout (:func:`_looks_like_countdown`), else ``None``. Reads
    one row of a Parquet file or one line of a JSONL file; ``None`` when the file cannot be read
    (the load that follows reports why)."""
    path = Path(path).expanduser()
    if not path.is_file():
        return None
    fmt = format if format != "auto" else {".parquet": "parquet", ".arrow": "arrow"}.get(path.suffix, "jsonl")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq  # heavy: loaded only for Parquet files

            batch = next(pq.ParquetFile(path).iter_batches(batch_size=1), None)
            row = batch.to_pylist()[0] if batch is not None and batch.num_rows else None
        elif fmt == "jsonl" and not path.name.endswith(".gz"):
            with path.open("r", encoding="utf-8") as f:
                first = next((line for line in f if line.strip()), None)
            row = json.loads(first) if first is not None else None
        else:
            return None
    except Exception:  # noqa: BLE001 - an unreadable file: the load names the problem
        return None
    return "countdown" if isinstance(row, Mapping) and _looks_like_countdown(row) else None


# ----------------------------------------------------------------------------- prompts


def prompt_messages(spec: DatasetSpec, problem: Problem, chat: bool) -> list[dict[str, Any]]:
    """The conversation of ``problem``: its chat list as given, or the rendered template as the
    user message; the system message (column or spec) first when there is one."""
    if problem.messages is not None:
        messages = [dict(m) for m in problem.messages]
        if problem.system is not None and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": problem.system})
        return messages
    user = spec.render(problem.question, chat=chat, context=problem.context)
    messages = [{"role": "user", "content": user}]
    if problem.system is not None:
        messages.insert(0, {"role": "system", "content": problem.system})
    return messages


@dataclass
class EncodedProblems:
    """Prompt ids of the problems that fit, and what was dropped.

    Attributes:
        problems: the kept problems, in order.
        prompt_ids: their prompt token ids.
        prompt_format: ``chat`` or ``plain`` (``arith`` for the synthetic task).
        dropped: ids of problems whose prompt exceeded ``max_prompt_tokens``.
    """

    problems: list[Problem]
    prompt_ids: list[list[int]]
    prompt_format: str
    dropped: list[str] = field(default_factory=list)


def prompt_format(spec: DatasetSpec, tokenizer: Any, use_chat_template: bool | None = None) -> str:
    """How ``spec``'s prompts are written: ``arith`` or ``countdown`` (the synthetic task's own
    template, ``Q: <question>\\nA:\\n``),
    ``chat`` (the tokenizer's chat template; ``use_chat_template=None``: when it has one) or
    ``plain`` (the spec's text template)."""
    if spec.synthetic:
        return spec.synthetic
    chat = has_chat_template(tokenizer) if use_chat_template is None else use_chat_template
    if chat and not has_chat_template(tokenizer):
        raise DatasetError("use_chat_template=True but the tokenizer has no chat template")
    return "chat" if chat else "plain"


def encode_problems(
    spec: DatasetSpec, tokenizer: Any, problems: Sequence[Problem], use_chat_template: bool | None = None,
    max_prompt_tokens: int | None = None,
) -> EncodedProblems:
    """Prompt token ids of ``problems`` (see :mod:`skpo.tasks.prompts`), with the overlong filter.

    ``max_prompt_tokens`` (default: the spec's) drops longer prompts, or raises
    :class:`DatasetError` naming the first one when ``spec.overlong == "error"``.
    """
    fmt = prompt_format(spec, tokenizer, use_chat_template)
    if fmt == "arith":
        ids = [plain_input_ids(tokenizer, p.arith if p.arith is not None else p.question) for p in problems]
        return EncodedProblems(list(problems), ids, "arith")
    if fmt == "countdown":
        ids = [plain_input_ids(tokenizer, p.countdown if p.countdown is not None else p.question) for p in problems]
        return EncodedProblems(list(problems), ids, "countdown")
    chat = fmt == "chat"
    limit = max_prompt_tokens if max_prompt_tokens is not None else spec.max_prompt_tokens
    out = EncodedProblems([], [], "chat" if chat else "plain")
    # No token decodes to more characters than the vocabulary's longest entry, so a prompt of more
    # than limit × that many characters is over the limit without tokenizing it (a 50 MB row).
    char_limit = None if limit is None else limit * _longest_token_chars(tokenizer)
    for p in problems:
        messages = prompt_messages(spec, p, chat)
        chars = sum(len(str(m.get("content", ""))) for m in messages)
        row_ids = None if char_limit is not None and chars > char_limit else prompt_ids(tokenizer, messages, chat=chat)
        if limit is not None and (row_ids is None or len(row_ids) > limit):
            if spec.overlong == "error":
                where = f"{spec.path}: row {p.index + 1}" + (f" (line {p.line})" if p.line is not None else "")
                size = f"{chars:,} characters" if row_ids is None else f"{len(row_ids)} tokens"
                raise DatasetError(f"{where}: prompt is {size}, over max_prompt_tokens={limit}")
            out.dropped.append(p.id)
            continue
        assert row_ids is not None  # (None only over the limit: dropped above)
        out.problems.append(p)
        out.prompt_ids.append(row_ids)
    return out


def _longest_token_chars(tokenizer: Any) -> int:
    """Characters of the longest vocabulary entry (as stored: a byte-level BPE entry has at least
    as many characters as its text), at least 1; 64 when the vocabulary cannot be read."""
    cached = getattr(tokenizer, "_skpo_longest_token", None)
    if cached is None:
        try:
            cached = max(1, max(len(str(t)) for t in tokenizer.get_vocab()))
        except Exception:  # noqa: BLE001 - a tokenizer without get_vocab: a generous bound
            cached = 64
        try:
            tokenizer._skpo_longest_token = cached
        except AttributeError:
            pass
    return cached


def load_spec_file(path: str | Path) -> list[DatasetSpec]:
    """Specs from a JSON or YAML file: one spec object, or a list of them.

    Relative ``path`` entries inside the file are resolved against the file's directory.
    Anything wrong — unreadable bytes, invalid YAML/JSON, unknown keys, bad values, two specs with
    one name — is a :class:`DatasetError` naming the file (and the spec, key and line).
    """
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"dataset spec file {str(path)!r} is a directory")
    if not path.is_file():
        raise FileNotFoundError(f"dataset spec file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise DatasetError(f"{path}: line {line}: not UTF-8 text ({err.reason})") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: line {err.lineno} column {err.colno}: not valid JSON ({err.msg})") from None
    except Exception as err:  # yaml.YAMLError: its message holds the line and column
        raise DatasetError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    items = data if isinstance(data, list) else [data]
    specs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DatasetError(f"{path}: every spec must be a mapping, got {type(item).__name__}")
        if item.get("path") is not None and not Path(str(item["path"])).expanduser().is_absolute():
            item = {**item, "path": str((path.parent / str(item["path"])).resolve())}
        try:
            specs.append(DatasetSpec.model_validate(item))
        except ValidationError as err:
            where = f"spec {item.get('name')!r}" if item.get("name") else f"spec {i + 1}"
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in err.errors())
            raise DatasetError(f"{path}: {where}: {problems}") from None
    names = [spec.name for spec in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DatasetError(f"{path}: two specs named {twice[0]!r} (each benchmark needs its own name)")
    return specs
