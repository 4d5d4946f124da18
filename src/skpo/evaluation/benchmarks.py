"""Benchmarks: the built-in evaluation sets, and scoring through the reward registry.

A benchmark is a :class:`~skpo.tasks.dataset.DatasetSpec` — the same record that describes
training data — naming a file (JSONL, JSONL.gz or Parquet), its columns, a reward and a prompt
template (see :mod:`skpo.tasks.dataset`). Any file in a known layout (AIME25, OlympiadBench,
Minerva-Math, ...) is evaluated by writing a spec for it (:func:`load_spec_file`).

Rewards (:mod:`skpo.rewards.registry`, shared with training):

========  ====================================================================================
math      math-verify against the answer column (LaTeX string or number; a list: any of them).
gsm8k     the same, with the gold read from a GSM8K ``#### N`` answer field; a plain number is
          accepted too.
choice    multiple choice: the question is shown with its options lettered ``A.``, ``B.``, …;
          the letter is read from the completion; the gold column is an option index (0-based)
          or a letter.
code      HumanEval-style: the prompt column is a function head, the completion its body (or,
          from a chat model, a fenced code block); scored by running the row's ``test`` with
          ``check(entry_point)`` in the sandbox.
arith     the synthetic chained-arithmetic task: problems from
          :func:`skpo.tasks.arith.heldout_problems` (no file), exact checks.
countdown the synthetic countdown task: problems from
          :func:`skpo.tasks.countdown.heldout_problems` (no file); with a path, a data file in
          TinyZero's layout. Scored by the ``countdown`` reward.
any       ``module:function``: your own reward function (see the registry's docstring).
========  ====================================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from skpo.rewards.base import Verdict
from skpo.rewards.choice import LETTERS, extract_choice
from skpo.rewards.registry import RewardContext, RewardEntry, code_for_humaneval, get_reward
from skpo.tasks.dataset import (
    MATH_TEMPLATE,
    BenchmarkSpec,
    DatasetError,
    DatasetSpec,
    Problem,
    data_file_spec,
    encode_problems,
    is_data_path,
    load_problems,
    load_spec_file,
    read_rows,
)

__all__ = [
    "BUILTIN_BENCHMARKS",
    "BenchmarkDataError",
    "BenchmarkSpec",
    "DatasetSpec",
    "LETTERS",
    "Problem",
    "code_for_humaneval",
    "encode_problems",
    "extract_choice",
    "data_file_spec",
    "get_spec",
    "load_problems",
    "load_spec_file",
    "read_jsonl",
    "resolve_benchmarks",
    "score_completions",
]

BenchmarkDataError = DatasetError

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


BUILTIN_BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in [
        BenchmarkSpec(
            name="math500", reward="math", path="math500.jsonl", prompt_column="problem",
            answer_column="answer", id_column="unique_id", template=MATH_TEMPLATE, max_new_tokens=1024,
        ),
        BenchmarkSpec(
            name="aime24", reward="math", path="aime24.jsonl", prompt_column="problem",
            answer_column="answer", id_column="id", template=MATH_TEMPLATE, max_new_tokens=2048,
        ),
        BenchmarkSpec(
            name="amc23", reward="math", path="amc23.jsonl", prompt_column="problem",
            answer_column="answer", id_column="id", template=MATH_TEMPLATE, max_new_tokens=2048,
        ),
        BenchmarkSpec(
            name="gsm8k", reward="gsm8k", path="gsm8k.jsonl", prompt_column="question",
            answer_column="answer", id_column="idx", template=MATH_TEMPLATE, max_new_tokens=512,
        ),
        BenchmarkSpec(
            name="mmlu_stem", reward="choice", path="mmlu_stem.jsonl", prompt_column="question",
            answer_column="answer", choices_column="choices", template=CHOICE_TEMPLATE, max_new_tokens=512,
        ),
        BenchmarkSpec(
            name="humaneval", reward="code", path="humaneval.jsonl.gz", prompt_column="prompt",
            answer_column=None, id_column="task_id", extra_columns=("test", "entry_point"),
            template="{question}", chat_template=CODE_CHAT_TEMPLATE, stop=CODE_STOP, max_new_tokens=512,
        ),
        BenchmarkSpec(name="arith", reward="arith", answer_column=None, max_new_tokens=None, n_problems=200),
        BenchmarkSpec(name="countdown", reward="countdown", answer_column=None, max_new_tokens=None, n_problems=200),
    ]
}


def get_spec(name: str, extra: Mapping[str, BenchmarkSpec] | None = None) -> BenchmarkSpec:
    """A built-in spec by name (or one of ``extra``); the error lists the known names."""
    known = {**BUILTIN_BENCHMARKS, **(extra or {})}
    if name not in known:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(sorted(known))}")
    return known[name]




def resolve_benchmarks(names: Sequence[str], extra: Mapping[str, BenchmarkSpec] | None = None) -> list[BenchmarkSpec]:
    """Specs for a list of built-in names, spec-file paths (``.yaml`` / ``.yml`` / ``.json``;
    every spec in the file is taken) and data files or folders (read as training reads
    ``data.path``: :func:`~skpo.tasks.dataset.data_file_spec`).

    Raises:
        KeyError: a name that is neither, saying what to give instead.
        FileNotFoundError: a data or spec file that does not exist.
    """
    known = {**BUILTIN_BENCHMARKS, **(extra or {})}
    specs: list[BenchmarkSpec] = []
    for name in names:
        if name.endswith((".yaml", ".yml", ".json")):
            specs += load_spec_file(Path(name))
        elif name in known:
            specs.append(known[name])
        elif is_data_path(name):
            if not Path(name).expanduser().exists():
                raise FileNotFoundError(f"data file {name!r} does not exist")
            specs.append(data_file_spec(name))
        else:
            raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(sorted(known))}; a data file or folder "
                           "(JSONL, JSONL.gz, Parquet, a datasets save_to_disk folder) is given by its path and read "
                           "as training reads data.path (skpo eval --data FILE); describe any other layout in a spec "
                           "file (.yaml/.json: skpo eval --spec FILE; docs/evaluation.md)")
    return specs


def read_jsonl(path):
    """All rows of a JSONL(.gz) benchmark file as ``(line_number, row)`` pairs; bad lines raise
    :class:`BenchmarkDataError`."""
    return read_rows(path, "jsonl")


def score_completions(
    spec: BenchmarkSpec,
    problems: Sequence[Problem],
    completions: Sequence[Sequence[str]],
    *,
    plain_prompt: bool = True,
    math_timeout_s: float = 5.0,
    code_workers: int = 4,
    reward: RewardEntry | None = None,
    tokenizer: Any = None,
) -> list[list[Verdict]]:
    """Verdicts ``[N][k]`` for completions ``[N][k]`` of ``problems`` under ``spec``'s reward,
    scored as one batch.

    Args:
        plain_prompt: whether the completions answer the plain template (code: then the
            spec's stop strings are cut off before running the code).
        math_timeout_s: per-answer bound of the math verifier.
        code_workers: sandboxes run at once for ``code``.
        reward: the reward to score with instead of ``spec.reward``'s registry entry (a run's
            own reward, with its ``reward.range``, on its held-out rows).
        tokenizer: the model's (a TRL-style reward function's ``completion_ids``).
    """
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completion lists")
    flat = [(i, text) for i, row in enumerate(completions) for text in row]
    context = RewardContext(plain_prompt=plain_prompt, stop=tuple(spec.stop), math_timeout_s=math_timeout_s,
                            code_workers=code_workers, tokenizer=tokenizer)
    verdicts = (reward or get_reward(spec.reward)).score([t for _, t in flat], [problems[i] for i, _ in flat], context)
    out: list[list[Verdict]] = []
    pos = 0
    for row in completions:
        out.append(list(verdicts[pos : pos + len(row)]))
        pos += len(row)
    return out
