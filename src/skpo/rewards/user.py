"""Your own reward function: the three signatures it may have, and the process it runs in.

**Signatures.** Detected from the function's parameters, or declared with ``reward.style``:

=====  =========================================================================================
skpo   ``score(completion: str, example) -> bool | float | (reward, correct) | dict | Verdict``,
       once per answer; with ``score.batched = True``, ``score(completions, examples) -> list``.
verl   ``compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float | dict``,
       once per answer, with the keywords verl 0.9.1's ``NaiveRewardManager`` passes: the row's
       ``data_source``; ``reward_model.ground_truth`` (else the answer column); a copy of the row's
       ``extra_info`` with ``num_turns=None`` and ``rollout_reward_scores={}`` added, as verl adds
       them. A dict result gives its ``"score"``; its ``"acc"`` (when present) says whether the
       answer is correct, ``"pred"`` what was extracted.
trl    ``reward_func(prompts, completions, **kwargs) -> list[float | None]``, once per batch, as
       TRL 1.16's ``GRPOTrainer._calculate_rewards`` calls it: ``prompts`` (the prompt column as
       given: a string, or the message list of conversational data), ``completions`` (strings;
       ``[{"role": "assistant", "content": …}]`` for conversational data), ``completion_ids``,
       every other column of the rows as a keyword list, ``trainer_state``, ``log_extra`` and
       ``log_metric``. Where a reading was picked: ``completion_ids`` are the completion text
       encoded again (no special tokens), not the sampled ids; ``trainer_state`` is ``None`` and
       ``log_extra`` / ``log_metric`` accept and drop what they get (skpo has no TRL state or
       completions table); ``None`` for an answer scores 0, as TRL's ``nansum`` over reward
       functions makes it. Coroutine functions are run to completion.
=====  =========================================================================================

A function matching none of them is refused with one line naming the three.

**The worker process.** A user function runs in a process of its own, forked from this one, which
imports the function's module (or already holds it: a function registered from Python is
inherited through the fork) and then scores one batch per request — one round trip over a
socket pair per batch. The parent waits ``reward.timeout_s`` for the import and for each batch;
past it, the worker's process group is killed with ``SIGKILL`` and the run ends with one line.
Nothing the function does can stretch that bound: it may catch every exception, ignore
``SIGALRM`` or loop forever. ``os._exit`` (or a crash) inside it ends the worker, not the run:
the parent reports it as an error (exit 2) and a run that had not finished a step removes its
files as any failed start does. *fork*, not *spawn* or *forkserver*: functions given from Python
— closures, lambdas, ``__main__`` functions — reach the worker without being pickled or
importable, and it starts in milliseconds. What the function changes (a list it appends to) stays
in the worker; ``reward.worker: false`` runs it in this process instead, bounded by a timer signal
it can catch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import math
import multiprocessing.connection
import os
import signal
import socket
import sys
import sysconfig
import threading
import traceback
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from skpo.errors import UserError
from skpo.reward_range import to_unit
from skpo.rewards.base import Verdict

__all__ = ["STYLES", "Calling", "RewardError", "RewardWorker", "calling_of", "call_user_reward", "raised_at",
           "score_batch", "to_verdict"]

STYLES = ("auto", "skpo", "verl", "trl")
SIGNATURES = ("skpo score(completion, example) (or score(completions, examples) with score.batched = True), "
              "verl compute_score(data_source, solution_str, ground_truth, extra_info=None), "
              "TRL reward_func(prompts, completions, **kwargs) -> list[float]")


class RewardError(UserError, ValueError):
    """A reward name that does not resolve, or a user function that misbehaves."""


# ----------------------------------------------------------------------------- results


def to_verdict(result: Any, where: str, value_range: tuple[float, float] = (0.0, 1.0)) -> Verdict:
    """A user function's result as a :class:`Verdict`: ``True``/``False``, a number, a ``(reward,
    correct)`` pair, a dict with ``reward`` (and ``correct`` / ``reason`` / ``extracted``), or a
    ``Verdict``. A reward in the declared ``value_range`` ``[a, b]`` (``reward.range``) is mapped
    linearly onto ``[0, 1]``; it is correct by default when it is ``b``. Numpy and 0-d tensor
    scalars count as numbers."""
    if isinstance(result, Verdict):
        return result
    result = _scalar(result)
    reason = "function"
    extracted = None
    reward: float  # (a bool too, until mapped below)
    correct: bool | None
    if isinstance(result, bool):
        reward, correct = result, result
    elif isinstance(result, (int, float)):
        reward, correct = float(result), None
    elif isinstance(result, tuple) and len(result) == 2:
        reward, correct = _scalar(result[0]), _scalar(result[1])
    elif isinstance(result, Mapping):
        if "reward" not in result:
            raise RewardError(f"{where}: returned a dict without 'reward' (keys: {sorted(result)})")
        reward, correct = _scalar(result["reward"]), _scalar(result.get("correct"))
        reason = str(result.get("reason", reason))
        extracted = None if result.get("extracted") is None else str(result["extracted"])
    else:
        raise RewardError(f"{where}: returned {type(result).__name__} {result!r:.60}; expected bool, float, (reward, correct), dict or Verdict")
    low, high = value_range
    if isinstance(reward, bool) and result is reward:  # True/False: the ends of the range
        reward = high if reward else low
    if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward) or not low <= reward <= high:
        hint = "" if value_range != (0.0, 1.0) else "; declare another range with reward.range (e.g. [-1, 1])"
        raise RewardError(f"{where}: reward must be a number in [{low:g}, {high:g}], got {reward!r}{hint}")
    reward = float(reward)
    if correct is None:
        correct = reward == high
    reward = to_unit(reward, value_range)
    if not isinstance(correct, bool):
        raise RewardError(f"{where}: 'correct' must be a bool, got {correct!r}")
    return Verdict(reward, correct, reason, extracted)


def _scalar(value: Any) -> Any:
    """A numpy scalar or a one-element tensor as the Python number it holds; anything else as is."""
    if isinstance(value, (bool, int, float, str, bytes, tuple, list, Mapping)) or value is None:
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):
            return value
    return value


# ----------------------------------------------------------------------------- signatures


@dataclass(frozen=True)
class Calling:
    """How a user function is called: ``style`` (skpo, verl or trl), whether skpo-style calls are
    ``batched``, and the keyword names it takes (``None``: any, it has ``**kwargs``)."""

    style: str
    batched: bool = False
    keywords: frozenset[str] | None = None

    @property
    def wants_ids(self) -> bool:
        """A TRL function that reads ``completion_ids`` (by name or through ``**kwargs``)."""
        return self.style == "trl" and (self.keywords is None or "completion_ids" in self.keywords)


def calling_of(fn: Callable[..., Any], declared: str = "auto", where: str = "reward function",
               batched: bool | None = None) -> Calling:
    """The :class:`Calling` of ``fn``: ``declared`` (``reward.style``) unless it is ``auto``, else
    from its parameters — ``solution_str`` and ``ground_truth``: verl; ``**kwargs`` with
    ``prompts``, ``completions`` or ``completion_ids`` (or nothing else required): TRL; two
    positional arguments: skpo. ``batched`` (or ``fn.batched``) marks a
    batched skpo function.

    Raises:
        RewardError: a function with none of the three signatures (one line naming them).
    """
    if declared not in STYLES:
        raise RewardError(f"reward.style: {declared!r} is not one of {', '.join(STYLES)}")
    batched = bool(getattr(fn, "batched", False)) if batched is None else batched
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or an extension callable: the skpo signature is assumed
        return Calling(declared if declared != "auto" else "skpo", batched)
    params = sig.parameters.values()
    keywords = None if any(p.kind is p.VAR_KEYWORD for p in params) else frozenset(
        p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    names = {p.name for p in params}
    style = declared
    if style == "auto":
        if batched:
            style = "skpo"
        elif {"solution_str", "ground_truth"} <= names:
            style = "verl"
        elif keywords is None and (names & {"prompts", "completions", "completion_ids"} or not [
                p for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]):
            style = "trl"  # TRL passes everything by keyword; its functions take **kwargs
        else:
            try:
                sig.bind("completion", "example")
                style = "skpo"
            except TypeError:
                raise RewardError(f"{where} has the signature {sig}, which is none of the three accepted: {SIGNATURES}; "
                                  "or declare one with reward.style=skpo|verl|trl") from None
    return Calling(style, batched and style == "skpo", keywords)


# ----------------------------------------------------------------------------- calling


def raised_at(err: BaseException) -> str:
    """``file:line`` where ``err`` was raised in the user's code: the innermost frame that is
    neither skpo's nor the standard library's or an installed package's (else the innermost
    one outside skpo; ``""`` when every frame is skpo's)."""
    frames = traceback.extract_tb(err.__traceback__)
    ours = str(Path(__file__).resolve().parents[1])
    libraries = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    outside = [f for f in frames if not str(Path(f.filename).resolve()).startswith(ours)]
    if not outside:  # raised by the call itself (arguments that do not bind): no line of the user's
        return ""
    users = [f for f in outside if not f.filename.startswith("<")
             and not any(f.filename.startswith(d) for d in libraries)] or outside
    frame = users[-1]
    return f"{frame.filename}:{frame.lineno}"


def _drop(*args: Any, **kwargs: Any) -> None:
    """TRL's ``log_extra`` / ``log_metric``: accepted, nothing recorded."""


def _call(fn: Callable[..., Any], where: str, about: str, *args: Any, **kwargs: Any) -> Any:
    try:
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
        return result
    except RewardError:
        raise
    except BaseException as err:  # SystemExit / KeyboardInterrupt inside the function end the run with one line too
        line = raised_at(err)
        raise RewardError(f"{where} raised {type(err).__name__}{about}{f' at {line}' if line else ''}: {err}") from err


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _only(keywords: frozenset[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    return kwargs if keywords is None else {k: v for k, v in kwargs.items() if k in keywords}


def verl_arguments(text: str, problem: Any) -> dict[str, Any]:
    """The keywords verl's ``NaiveRewardManager`` passes to ``compute_score`` for one answer."""
    row = getattr(problem, "row", None) or {}
    model = row.get("reward_model")
    truth = model["ground_truth"] if isinstance(model, Mapping) and "ground_truth" in model else getattr(problem, "gold", None)
    extra = row.get("extra_info")
    extra_info = dict(extra) if isinstance(extra, Mapping) else {}
    extra_info["num_turns"] = None  # verl: the row's __num_turns__, absent outside multi-turn rollouts
    extra_info["rollout_reward_scores"] = {}
    return {"data_source": row.get("data_source"), "solution_str": text, "ground_truth": truth, "extra_info": extra_info}


def trl_arguments(texts: Sequence[str], problems: Sequence[Any], ids: list[list[int]] | None) -> dict[str, Any]:
    """The keywords TRL's ``GRPOTrainer`` passes to a reward function for one batch."""
    chat = bool(problems) and getattr(problems[0], "messages", None) is not None
    prompts = [[dict(m) for m in p.messages] if getattr(p, "messages", None) is not None else getattr(p, "question", None)
               for p in problems]
    completions: list[Any] = [[{"role": "assistant", "content": t}] for t in texts] if chat else list(texts)
    rows = [getattr(p, "row", None) or {} for p in problems]
    columns = [k for k in (rows[0] if rows else {}) if k not in ("prompt", "completion", "completion_ids")]
    return {**{k: [r.get(k) for r in rows] for k in columns}, "prompts": prompts, "completions": completions,
            "completion_ids": ids, "trainer_state": None, "log_extra": _drop, "log_metric": _drop}


def score_batch(fn: Callable[..., Any], calling: Calling, texts: Sequence[str], problems: Sequence[Any],
                where: str, value_range: tuple[float, float], ids: list[list[int]] | None = None) -> list[Verdict]:
    """Verdicts of ``fn`` on one batch, called as its :class:`Calling` says; whatever goes wrong is
    a :class:`RewardError` naming ``where``, the problem and the ``file:line`` it was raised at."""
    n = len(texts)
    if calling.style == "trl":
        kwargs = trl_arguments(texts, problems, ids)
        try:
            missing = [p.name for p in inspect.signature(fn).parameters.values()
                       if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in kwargs]
        except (TypeError, ValueError):
            missing = []
        if missing:
            raise RewardError(f"{where} needs {', '.join(map(repr, missing))}, which the rows do not have "
                              f"(columns: {', '.join(sorted(getattr(problems[0], 'row', None) or {})) or 'none'})")
        results = _call(fn, where, "", **_only(calling.keywords, kwargs))
        results = _as_list(results, where, n)
        verdicts = [to_verdict(0.0 if r is None else r, f"{where} (sample {i})", value_range) for i, r in enumerate(results)]
        return [dataclasses.replace(v, reason="returned None: scored 0, as TRL sums it") if r is None else v
                for v, r in zip(verdicts, results)]
    if calling.style == "verl":
        out = []
        for i, (text, problem) in enumerate(zip(texts, problems)):
            result = _call(fn, where, _on(problem, i), **_only(calling.keywords, verl_arguments(text, problem)))
            out.append(to_verdict(_from_verl(result, where), f"{where} (sample {i})", value_range))
        return out
    if calling.batched:
        results = _as_list(_call(fn, where, "", list(texts), list(problems)), where, n)
    else:
        results = [_call(fn, where, _on(problem, i), text, problem) for i, (text, problem) in enumerate(zip(texts, problems))]
    return [to_verdict(r, f"{where} (sample {i})", value_range) for i, r in enumerate(results)]


def _on(problem: Any, i: int) -> str:
    return f" on problem {getattr(problem, 'id', i)!r}"


def _as_list(results: Any, where: str, n: int) -> list[Any]:
    try:
        results = list(results)
    except TypeError:
        raise RewardError(f"{where} returned {type(results).__name__}, not a list of {n} rewards") from None
    if len(results) != n:
        raise RewardError(f"{where} returned {len(results)} results for {n} completions")
    return results


def _from_verl(result: Any, where: str) -> Any:
    """verl's result: a number, or a dict whose ``score`` is the reward (``acc``: correct; ``pred``: extracted)."""
    if not isinstance(result, Mapping):
        return result
    if "score" not in result:
        raise RewardError(f"{where}: returned a dict without 'score' (verl's key; keys: {sorted(result)})")
    out: dict[str, Any] = {"reward": result["score"], "reason": "function"}
    if result.get("acc") is not None:
        out["correct"] = bool(_scalar(result["acc"]))
    if result.get("pred") is not None:
        out["extracted"] = result["pred"]
    return out


# ----------------------------------------------------------------------------- in this process


class _RewardTimeout(BaseException):
    """Raised in the main thread by the alarm that bounds a user reward's batch (``reward.worker: false``)."""


def call_user_reward(fn: Callable[..., Any], completions: list[str], problems: list[Any], batched: bool, where: str,
                     timeout_s: float | None, value_range: tuple[float, float] = (0.0, 1.0),
                     calling: Calling | None = None, ids: list[list[int]] | None = None) -> list[Verdict]:
    """:func:`score_batch` in this process, bounded by ``timeout_s`` seconds for the whole batch
    through a timer signal in the main thread — which the function can catch or ignore: the
    worker process (:class:`RewardWorker`) is the bound that holds."""
    calling = calling or Calling("skpo", batched)
    bounded = (timeout_s is not None and timeout_s > 0 and hasattr(signal, "setitimer")
               and threading.current_thread() is threading.main_thread())
    if bounded:
        def alarm(signum: int, frame: Any) -> None:
            raise _RewardTimeout

        previous = signal.signal(signal.SIGALRM, alarm)
        assert timeout_s is not None  # (bounded)
        signal.setitimer(signal.ITIMER_REAL, float(timeout_s))
    try:
        return score_batch(fn, calling, completions, problems, where, value_range, ids)
    except RewardError as err:
        if isinstance(err.__cause__, _RewardTimeout):
            raise _timeout_error(where, timeout_s, len(completions), killed=False) from None
        raise
    except _RewardTimeout:
        raise _timeout_error(where, timeout_s, len(completions), killed=False) from None
    finally:
        if bounded:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def _timeout_error(where: str, timeout_s: float | None, n: int, killed: bool) -> RewardError:
    how = " (its worker process was killed)" if killed else ""
    return RewardError(f"{where} did not return within reward.timeout_s={timeout_s:g} s for a batch of {n} answers"
                       f"{how}: a hang, or raise reward.timeout_s")


# ----------------------------------------------------------------------------- the worker process

_WORKERS: weakref.WeakSet[RewardWorker] = weakref.WeakSet()


class RewardWorker:
    """One user function in a forked process (see the module docstring).

    Args:
        load: ``() -> the function``, run in the worker (imports the user's module there).
        where: how errors name the function (``"reward function 'm:f'"``).
        loading: what ``load`` does, for the error when it hangs or the worker dies (``"importing 'm'"``).
        style, batched: ``reward.style`` and a declared batched skpo function (:func:`calling_of`).
        value_range: ``reward.range``.
        timeout_s: bound on the import and on each batch (``reward.timeout_s``).
    """

    def __init__(self, load: Callable[[], Callable[..., Any]], where: str, loading: str, style: str = "auto",
                 batched: bool | None = None, value_range: tuple[float, float] = (0.0, 1.0),
                 timeout_s: float | None = 120.0) -> None:
        self.load, self.where, self.loading, self.style, self.batched = load, where, loading, style, batched
        self.value_range, self.timeout_s = cast("tuple[float, float]", tuple(value_range)), timeout_s  # (two values)
        self.calling: Calling | None = None
        self.pid: int | None = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._lock = threading.Lock()
        _WORKERS.add(self)

    # -- the parent's side ------------------------------------------------------------------

    def start(self) -> Calling:
        """Fork the worker and wait for it to load the function; returns how it is called."""
        with self._lock:
            return self._start()

    def _start(self) -> Calling:
        if self.pid is not None and self._alive():
            assert self.calling is not None
            return self.calling
        self._reap()
        for stream in (sys.stdout, sys.stderr):  # nothing buffered here is written twice
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        ours, theirs = socket.socketpair()
        from_main, parent = threading.current_thread() is threading.main_thread(), os.getpid()
        with warnings.catch_warnings():  # Python 3.12+ warns on any fork of a process with threads
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the worker: never returns into the caller's code
            code = 70
            try:
                ours.close()
                _worker_main(theirs, self, parent, from_main)
                code = 0
            finally:
                os._exit(code)
        theirs.close()
        try:
            os.setpgid(pid, pid)  # (the worker does so too: whichever runs first)
        except OSError:
            pass
        self.pid, self._conn = pid, multiprocessing.connection.Connection(ours.detach())
        status, value = self._reply(f"while {self.loading}", f"{self.where}: {self.loading} did not finish within "
                                    f"reward.timeout_s={self.timeout_s:g} s (a hang at import, or raise reward.timeout_s)")
        if status != "ready":
            self._reap()
            raise RewardError(value)
        self.calling = value
        return value

    def score(self, texts: Sequence[str], problems: Sequence[Any], ids: list[list[int]] | None = None) -> list[Verdict]:
        """Verdicts of one batch: one round trip. A batch past ``timeout_s`` kills the worker."""
        with self._lock:
            self._start()
            assert self._conn is not None
            try:
                self._conn.send((list(texts), list(problems), ids))
            except (OSError, EOFError):
                self._reap()
                raise RewardError(f"{self.where}: its worker process ended before the batch was sent") from None
            except Exception as err:  # a problem that cannot be pickled
                raise RewardError(f"{self.where}: the batch cannot be sent to its worker process ({type(err).__name__}: {err})") from None
            status, value = self._reply(f"while scoring a batch of {len(texts)} answers",
                                        _timeout_error(self.where, self.timeout_s, len(texts), killed=True).args[0])
        if status != "ok":
            raise RewardError(value)
        return value

    def _reply(self, during: str, late: str) -> tuple[str, Any]:
        """The worker's next message; a timeout or a dead worker is a :class:`RewardError`."""
        assert self._conn is not None
        try:
            ready = self._conn.poll(self.timeout_s if self.timeout_s and self.timeout_s > 0 else None)
            if not ready:
                self._reap()
                raise RewardError(late)
            return self._conn.recv()
        except (EOFError, OSError):
            code = self._reap()
            how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
            raise RewardError(f"{self.where}: its worker process ended {during} ({how}: os._exit, a crash, or a "
                              "signal); a reward function must return") from None
        except BaseException:  # interrupted here: a busy worker would answer into the next batch
            self._reap()
            raise

    def _alive(self) -> bool:
        """Whether the worker still runs; one that ended between batches is collected and forgotten."""
        try:
            if os.waitpid(self.pid, os.WNOHANG) == (0, 0):  # type: ignore[arg-type]
                return True
        except ChildProcessError:
            pass
        if self._conn is not None:
            self._conn.close()
        self.pid, self._conn, self.calling = None, None, None  # (collected: its pid must not be signalled)
        return False

    def _reap(self) -> int | None:
        """End the worker (its whole process group, with ``SIGKILL``: a worker that already exited
        is only collected) and return its exit code."""
        pid, conn = self.pid, self._conn
        self.pid, self._conn, self.calling = None, None, None
        if conn is not None:
            conn.close()
        if pid is None:
            return None
        for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                kill()
            except (ProcessLookupError, PermissionError):
                pass
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return None
        return os.waitstatus_to_exitcode(status)

    def close(self) -> None:
        """Stop the worker: asked to exit, killed if it has not within a second."""
        with self._lock:
            if self.pid is None or self._conn is None:
                return
            try:
                self._conn.send(None)
                self._conn.poll(1.0)  # readable once the worker has exited (end of file)
            except (OSError, ValueError, EOFError):
                pass
            self._reap()

    def __del__(self) -> None:
        if self.pid is not None:
            try:
                self._reap()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass


def _close_workers() -> None:
    for worker in list(_WORKERS):
        try:
            worker.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _disown_workers() -> None:
    """In any forked child (a worker, or a process a library forks): the workers are the
    parent's; neither closing nor collecting them here may end them."""
    for worker in list(_WORKERS):
        worker.pid, worker._conn, worker._lock = None, None, threading.Lock()


import atexit  # noqa: E402 - registered next to what it closes

atexit.register(_close_workers)
os.register_at_fork(after_in_child=_disown_workers)


# -- the worker's side -------------------------------------------------------------------------


def _worker_main(sock: socket.socket, spec: RewardWorker, parent: int, from_main: bool) -> None:
    """Main of the worker: load the function, report how it is called, then score batches until
    the socket closes. Runs in the forked child; returning ends it (``os._exit``)."""
    try:
        os.setpgid(0, 0)  # its own group: killed as one, and Ctrl-C at the terminal is the parent's
    except OSError:
        pass
    if from_main and sys.platform.startswith("linux"):  # die with the parent (the forking thread: the main one)
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:
            return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGALRM, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, 0)
    conn = multiprocessing.connection.Connection(sock.detach())
    try:
        fn = spec.load()
        calling = calling_of(fn, spec.style, spec.where, spec.batched)
    except RewardError as err:
        conn.send(("error", str(err)))
        return
    except BaseException as err:  # noqa: BLE001 - the loader's own errors are one line too
        conn.send(("error", f"{spec.where}: {spec.loading} failed: {type(err).__name__}: {err}"))
        return
    conn.send(("ready", calling))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        texts, problems, ids = message
        try:
            reply: tuple[str, Any] = ("ok", score_batch(fn, calling, texts, problems, spec.where, spec.value_range, ids))
        except RewardError as err:
            reply = ("error", str(err))
        except BaseException as err:  # noqa: BLE001 - nothing the function raises ends the worker
            reply = ("error", f"{spec.where}: {type(err).__name__}: {err}")
        for stream in (sys.stdout, sys.stderr):  # the function's prints, before the worker may be killed
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        try:
            conn.send(reply)
        except Exception as err:  # noqa: BLE001 - e.g. a reason that cannot be pickled
            conn.send(("error", f"{spec.where}: its verdicts cannot be sent back ({type(err).__name__}: {err})"))
