"""One reward registry for training and evaluation.

A reward turns completions of problems into :class:`~skpo.rewards.base.Verdict` s, a batch at a
time (the math verifier then spreads the batch over its worker pool, the code verifier over
its sandboxes). Built-in entries:

========  =====================================================================================
math      math-verify against the gold answer(s) (LaTeX or a number); a list of gold answers
          counts a completion correct when it matches any of them.
gsm8k     the same checker; the gold was read from a GSM8K ``#### N`` field at load time.
choice    the option letter (:func:`skpo.rewards.choice.extract_choice`) against the gold letter.
code      HumanEval-style: the completion (or its fenced code block) runs against the row's
          ``test`` with ``check(entry_point)`` in the sandbox.
arith     the synthetic chained-arithmetic task: exact final answer.
countdown the countdown task: the final equation uses each given number exactly once and
          equals the target in exact rationals (:mod:`skpo.rewards.countdown`); reads the
          synthetic problem, or a row's ``nums``/``target`` or ``reward_model.ground_truth``
          (TinyZero's and verl's layout), and ``<answer>…</answer>`` or an ``Answer:`` line.
========  =====================================================================================

**Your own function.** ``reward.function: my_module:score`` (or ``path/to/file.py:score``;
a module is imported with the working directory on ``sys.path``) registers a Python function
with one of three signatures (:mod:`skpo.rewards.user`): skpo's own::

    def score(completion: str, example) -> bool | float | tuple[float, bool] | dict | Verdict:
        ...

``example`` is the problem (:class:`skpo.tasks.dataset.Problem`): ``example.gold`` /
``example.golds`` (the answer column, all acceptable answers), ``example.question``,
``example.id`` and ``example.row`` (the whole data row, for any other column). Return
``True``/``False``, a reward in ``[0, 1]`` (correct when it is 1), a ``(reward, correct)`` pair,
a dict with ``reward`` and optionally ``correct`` / ``reason`` / ``extracted``, or a ``Verdict``.
A function with the attribute ``batched = True`` is called once per batch instead, as
``score(completions: list[str], examples: list) -> list[...]``. verl's
``compute_score(data_source, solution_str, ground_truth, extra_info=None)`` and TRL's
``reward_func(prompts, completions, **kwargs)`` work as they are. The function runs in a worker
process killed at ``reward.timeout_s``. A result outside ``[0, 1]``, or a function that raises,
hangs or exits, stops the run with an error naming the function, the sample and the line: a
broken reward must not train silently.

The objects passed as problems are duck-typed (attributes ``golds``, ``choices``, ``row``,
``arith``), so this layer imports nothing above it.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from skpo.plugins import PluginError, import_plugin
from skpo.rewards.arith import check_answer, parse_answer
from skpo.rewards.base import Verdict
from skpo.rewards.choice import extract_choice
from skpo.rewards.code import verify_humaneval_batch
from skpo.rewards.countdown import check_countdown, numbers_and_target
from skpo.rewards.math import verify_math_batch
from skpo.rewards.user import Calling, RewardError, RewardWorker, call_user_reward, calling_of, to_verdict

__all__ = [
    "REWARDS",
    "RewardContext",
    "RewardEntry",
    "RewardError",
    "code_for_humaneval",
    "get_reward",
    "register_reward",
    "to_verdict",
    "user_reward_entry",
]


@dataclass(frozen=True)
class RewardContext:
    """What a verifier may need besides the completions and their problems.

    Attributes:
        plain_prompt: the completions answer a plain prompt (not chat-templated); the code
            verifier then cuts them at ``stop`` before running them.
        stop: stop strings of the benchmark.
        math_timeout_s: per-answer bound of the math verifier.
        code_workers: sandboxes run at once.
        tokenizer: the run's tokenizer (TRL-style functions get ``completion_ids`` from it).
    """

    plain_prompt: bool = True
    stop: tuple[str, ...] = ()
    math_timeout_s: float = 5.0
    code_workers: int = 4
    tokenizer: Any = field(default=None, compare=False, repr=False)


BatchRewardFn = Callable[[Sequence[str], Sequence[Any], RewardContext], list[Verdict]]


@dataclass(frozen=True)
class RewardEntry:
    """A registered reward.

    Attributes:
        name: registry name (or ``module:function`` for a user function).
        fn: ``fn(completions, problems, context) -> verdicts``, batched.
        needs_answer: the data must have an answer column.
        needs_choices: the data must have a choices column.
        partial_credit: rewards strictly between 0 and 1 may occur.
        description: one line for tables and errors.
        needs_columns: row columns the reward reads (``code``: ``prompt``, ``test``, ``entry_point``);
            data without them is refused at load and by ``--check``, naming them.
        check_problem: ``check_problem(problem)`` raises ``ValueError`` (the reason) for a
            problem the reward cannot score (``countdown``: no numbers or target); data files
            are checked row by row at load and by ``--check``.
        worker: a user function's worker process (None: the function runs in this process,
            and for the built-in rewards).
    """

    name: str
    fn: BatchRewardFn
    needs_answer: bool = True
    needs_choices: bool = False
    partial_credit: bool = False
    description: str = ""
    needs_columns: tuple[str, ...] = ()
    check_problem: Callable[[Any], Any] | None = None
    worker: RewardWorker | None = field(default=None, repr=False, compare=False)

    def score(self, completions: Sequence[str], problems: Sequence[Any], context: RewardContext | None = None) -> list[Verdict]:
        """Verdicts for aligned ``completions`` and ``problems``."""
        if len(completions) != len(problems):
            raise ValueError(f"{len(completions)} completions but {len(problems)} problems")
        if not completions:
            return []
        verdicts = self.fn(list(completions), list(problems), context or RewardContext())
        if len(verdicts) != len(completions):
            raise RewardError(f"reward {self.name!r} returned {len(verdicts)} verdicts for {len(completions)} completions")
        return verdicts


REWARDS: dict[str, RewardEntry] = {}


def register_reward(
    name: str, *, needs_answer: bool = True, needs_choices: bool = False, partial_credit: bool = False, description: str = "",
    needs_columns: tuple[str, ...] = (), check_problem: Callable[[Any], Any] | None = None,
) -> Callable[[BatchRewardFn], BatchRewardFn]:
    """Decorator: register a batched reward function under ``name``."""

    def wrap(fn: BatchRewardFn) -> BatchRewardFn:
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is already registered")
        REWARDS[name] = RewardEntry(name, fn, needs_answer, needs_choices, partial_credit, description, tuple(needs_columns),
                                    check_problem)
        return fn

    return wrap


def _golds(problem: Any) -> tuple[str, ...]:
    golds = getattr(problem, "golds", None)
    if golds is None:
        gold = getattr(problem, "gold", None)
        golds = tuple(gold) if isinstance(gold, (list, tuple)) else (gold,)
    return tuple(str(g) for g in golds)


@register_reward("math", description="math-verify against the gold answer(s)")
def _math(completions: Sequence[str], problems: Sequence[Any], ctx: RewardContext) -> list[Verdict]:
    # One flat batch over every (completion, acceptable answer) pair: the pool runs them all.
    pairs = [(i, gold) for i, p in enumerate(problems) for gold in _golds(p)]
    flat = verify_math_batch([completions[i] for i, _ in pairs], [g for _, g in pairs], ctx.math_timeout_s)
    best: list[Verdict | None] = [None] * len(completions)
    for (i, _), verdict in zip(pairs, flat):
        current = best[i]
        if current is None or (verdict.correct and not current.correct):
            best[i] = verdict
    return [v if v is not None else Verdict.wrong("no gold answer") for v in best]


@register_reward("gsm8k", description="math-verify against the number after '####'")
def _gsm8k(completions: Sequence[str], problems: Sequence[Any], ctx: RewardContext) -> list[Verdict]:
    return _math(completions, problems, ctx)


@register_reward("choice", needs_choices=True, description="option letter against the gold letter")
def _choice(completions: Sequence[str], problems: Sequence[Any], ctx: RewardContext) -> list[Verdict]:
    out = []
    for text, problem in zip(completions, problems):
        letter = extract_choice(text, len(getattr(problem, "choices", None) or ()))
        if letter is None:
            out.append(Verdict.wrong("no option letter found"))
        elif letter in _golds(problem):
            out.append(Verdict.right("correct", letter))
        else:
            out.append(Verdict.wrong("wrong option", letter))
    return out


_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def code_for_humaneval(completion: str, problem: Any, stop: Sequence[str] = ()) -> str:
    """The text to append to a HumanEval prompt for ``completion``.

    - A fenced code block (chat models): its content; when it redefines the entry point, it
      is appended after a newline (the later definition replaces the prompt's stub).
    - Otherwise a body continuation (base models): cut at the first stop string, since the
      engine keeps the stop string that ended the sample.
    """
    match = _FENCE.search(completion)
    if match:
        code = match.group(1)
        entry = str(getattr(problem, "row", {}).get("entry_point", ""))
        if entry and re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE):
            return "\n" + code
        return code
    cut = len(completion)
    for s in stop:
        pos = completion.find(s)
        if pos != -1:
            cut = min(cut, pos)
    return completion[:cut]


@register_reward("code", needs_answer=False, description="run the row's tests in the sandbox (HumanEval layout)",
                 needs_columns=("prompt", "test", "entry_point"))
def _code(completions: Sequence[str], problems: Sequence[Any], ctx: RewardContext) -> list[Verdict]:
    stop = ctx.stop if ctx.plain_prompt else ()
    bodies = [code_for_humaneval(t, p, stop) for t, p in zip(completions, problems)]
    return verify_humaneval_batch(bodies, [p.row for p in problems], max_workers=ctx.code_workers)


@register_reward("arith", needs_answer=False, description="synthetic chained arithmetic: exact final answer")
def _arith(completions: Sequence[str], problems: Sequence[Any], ctx: RewardContext) -> list[Verdict]:
    out = []
    for text, problem in zip(completions, problems):
        arith = getattr(problem, "arith", None) or problem
        answer = parse_answer(text)
        if answer is None:
            out.append(Verdict.wrong("no answer line"))
        elif check_answer(text, arith):
            out.append(Verdict.right("correct", str(answer)))
        else:
            out.append(Verdict.wrong("wrong answer", str(answer)))
    return out


@register_reward("countdown", needs_answer=False, check_problem=numbers_and_target,
                 description="countdown: each given number once, exact value = target")
def _countdown(completions: Sequence[str], problems: Sequence[Any], ctx: RewardContext) -> list[Verdict]:
    out = []
    for text, problem in zip(completions, problems):
        numbers, target = numbers_and_target(problem)
        out.append(check_countdown(text, numbers, target))
    return out


# ----------------------------------------------------------------------------- user functions

DEFAULT_USER_TIMEOUT_S = 120.0


def _token_ids(calling: Calling, ctx: RewardContext, completions: Sequence[str]) -> list[list[int]] | None:
    """TRL's ``completion_ids`` (the completions encoded again), for a function that reads them."""
    if not calling.wants_ids or ctx.tokenizer is None:
        return None
    return [list(ctx.tokenizer.encode(t, add_special_tokens=False)) for t in completions]


def user_reward_entry(name: str, load: Callable[[], Callable[..., Any]], *, where: str, loading: str,
                      value_range: tuple[float, float] = (0.0, 1.0), timeout_s: float | None = DEFAULT_USER_TIMEOUT_S,
                      style: str = "auto", worker: bool = True, batched: bool | None = None,
                      description: str = "") -> RewardEntry:
    """A :class:`RewardEntry` for a user function that ``load()`` returns: in a worker process
    (:class:`~skpo.rewards.user.RewardWorker`, started on the first batch or by ``entry.worker.start()``)
    unless ``worker`` is false or this platform cannot fork, then in this process."""
    value_range = tuple(float(v) for v in value_range)  # type: ignore[assignment]
    if worker and hasattr(os, "fork"):
        process = RewardWorker(load, where, loading, style, batched, value_range, timeout_s)

        def score(completions: Sequence[str], problems: Sequence[Any], ctx: RewardContext) -> list[Verdict]:
            calling = process.start()
            return process.score(completions, problems, _token_ids(calling, ctx, completions))
    else:
        process = None
        fn = load()
        calling = calling_of(fn, style, where, batched)

        def score(completions: Sequence[str], problems: Sequence[Any], ctx: RewardContext) -> list[Verdict]:
            return call_user_reward(fn, list(completions), list(problems), calling.batched, where, timeout_s, value_range,
                                    calling, _token_ids(calling, ctx, completions))

    return RewardEntry(name, score, needs_answer=False, partial_credit=True,
                       description=description or f"user function {name}", worker=process)


_USER: dict[str, RewardEntry] = {}
_USER_LOCK = threading.Lock()


def _load_callable(ref: str) -> Callable[..., Any]:
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise RewardError(f"reward function {ref!r}: expected 'module:function' or 'path/to/file.py:function'")
    try:  # a syntax error or an exception at import time is one line too
        module = import_plugin(target, what="module")
    except PluginError as err:
        kind = "cannot import module" if not (target.endswith(".py") or "/" in target or os.sep in target) else "cannot import"
        raise RewardError(f"reward function {ref!r}: {kind} {target!r} ({err})") from None
    fn: Any = module
    for part in attr.split("."):  # a qualified name: Class.method, namespace.function
        fn = getattr(fn, part, None)
    if not callable(fn):
        raise RewardError(f"reward function {ref!r}: {target!r} has no callable {attr!r}")
    return fn


def get_reward(name: str, value_range: tuple[float, float] = (0.0, 1.0),
               timeout_s: float | None = DEFAULT_USER_TIMEOUT_S, style: str = "auto", worker: bool = True) -> RewardEntry:
    """A registered reward by name, or a user function given as ``module:function`` /
    ``path/to/file.py:function`` whose rewards lie in ``value_range`` (``reward.range``; mapped
    onto ``[0, 1]``), called as ``style`` says (``reward.style``; :mod:`skpo.rewards.user`), in a
    worker process bounded by ``timeout_s`` (``worker=False``: in this process). The worker is
    started here, so a module that fails to import, hangs at import or has none of the accepted
    signatures is an error now; it is started once per process and set of arguments.

    Raises:
        RewardError: naming the unknown reward and listing the known ones.
    """
    if name in REWARDS:
        return REWARDS[name]
    if ":" in name:
        key = f"{name}@{value_range[0]:g},{value_range[1]:g}@{timeout_s}@{style}@{worker}"
        with _USER_LOCK:
            if key not in _USER:
                where = f"reward function {name!r}"
                target = name.rpartition(":")[0]
                entry = user_reward_entry(name, lambda: _load_callable(name), where=where, loading=f"importing {target!r}",
                                          value_range=value_range, timeout_s=timeout_s, style=style, worker=worker)
                if entry.worker is not None:
                    entry.worker.start()
                _USER[key] = entry
            return _USER[key]
    if name.startswith("python."):
        raise RewardError(
            f"reward {name!r} was a Python function given to skpo.train / skpo.build in the process that started this "
            "run, and nothing registers it in this one: resume from Python with the same function (skpo.train(config="
            "'OUT/config.yaml', reward=fn, resume=True)), or move it into a module and resume with "
            "reward.function=module:function")
    raise RewardError(f"unknown reward {name!r}; registered: {', '.join(sorted(REWARDS))}, or 'module:function' for your own")
