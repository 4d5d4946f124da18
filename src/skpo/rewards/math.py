"""Math answer verifier: extract a final answer from a completion and compare it to the gold.

Extraction and equivalence come from the ``math_verify`` library (sympy-based: ``1/2``,
``0.5`` and ``\\frac{1}{2}`` are the same number, ``2\\sqrt{2}`` equals ``\\sqrt{8}``, sets and
tuples are compared element-wise, and so on). This module adds three things around it:

1. **Where the answer is.** The last ``\\boxed{...}`` wins (math-verify reads boxes that
   are joined by a comma, "and" or "or", or sit within 10 characters of each other, as one
   multi-part answer such as ``{1, 2}``); without a box, a GSM8K-style
   ``#### 42`` line; then anchored phrases ("the final answer is ...", "Answer: ...",
   "the answer is ..."); and, unless ``require_anchor=True``, the last number or LaTeX
   expression in the text.
2. **A hard time bound.** sympy can spin for minutes (or forever) on adversarial answers:
   ``\\boxed{10^{10^{10}}}`` makes it try to build a ten-billion-digit integer. math-verify's
   own timeout uses ``SIGALRM``, which works only in the main thread and cannot interrupt
   long C-level computations. So every check runs in a small pool of worker processes
   (:class:`MathVerifierPool`, plain subprocesses): a job that overruns its deadline gets its
   worker killed with ``SIGKILL`` and replaced, and its verdict is reward 0, reason
   ``"timeout after Ns"``. The other jobs of the batch carry on in the other workers. Inside a
   worker, math-verify's signal timeouts are switched off (the pool is the timeout) and the
   address space is capped, so a memory blow-up becomes a ``MemoryError`` (scored wrong)
   rather than an OOM on the host.
3. **Gold answers in dataset formats**: MATH-500 LaTeX strings, GSM8K ``#### N`` answer
   fields (:func:`gold_from_gsm8k`), AIME/AMC integers.
4. **Numbers compared as numbers.** Where the gold and the answer are each one real number,
   skpo compares them itself (:func:`numbers_agree`): integers and fractions exactly, anything
   with a decimal to a relative 1e-5, at every magnitude and with signs kept; math-verify's own
   comparison rounds to 6 decimals, under which every value below 5e-7 equals 0. A bound
   (``\\le 7``) never matches a value (``7``).

Everything that calls sympy runs in a worker, including :func:`extract_answer`, so no entry
point of this module can hang its caller for longer than ``timeout_s`` (plus start-up of a
replacement worker when one was killed).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing.connection
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from skpo.rewards.base import Verdict

__all__ = [
    "MathVerifierPool",
    "default_pool",
    "extract_answer",
    "gold_from_gsm8k",
    "shutdown_default_pool",
    "verify_math",
    "verify_math_batch",
]

DEFAULT_TIMEOUT_S = 5.0
# Address-space headroom a worker gets on top of what it uses after importing sympy.
DEFAULT_WORKER_MEMORY_MB = 2048

# --------------------------------------------------------------------------------------------
# The checks themselves. These run inside worker processes (they are only called through the
# pool), so they may block for as long as sympy likes: the pool bounds them.
# --------------------------------------------------------------------------------------------


def _configs(allow_unanchored: bool) -> list[Any]:
    from math_verify import (  # heavy (sympy): loaded in the verifier's worker process
        ExprExtractionConfig,
        LatexExtractionConfig,
    )

    return [
        # boxed_match_priority=0: a \boxed{} answer beats every other pattern.
        LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=allow_unanchored),
        ExprExtractionConfig(try_extract_without_anchor=allow_unanchored),
    ]


# Forms math-verify reads differently from what they mean, rewritten before parsing (golds and
# completions alike): e-notation (``4.5e33``, which it reads as 4.5·e·33, while ``4.5E33`` and
# ``4.5 \times 10^{33}`` parse as numbers) and a percent sign after a number (``60\%`` for a
# "what percent" question whose gold is ``60``). Thousands separators, units in ``\text{}``,
# ``\dfrac``/``\tfrac``, degrees and ``\$`` it already handles (tests/test_rewards_math.py).
_E_NOTATION = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)[eE]([+-]?\d+)(?!\w|\.\d)")
_PERCENT = re.compile(r"(\d)\s*\\?%")


def normalize_answer_text(text: str) -> str:
    """``4.5e33`` → ``4.5 \\times 10^{33}``; ``60\\%`` / ``60%`` → ``60``."""
    text = _E_NOTATION.sub(lambda m: f"{m.group(1)} \\times 10^{{{int(m.group(2))}}}", text)
    return _PERCENT.sub(r"\1", text)


def _parse(text: str, allow_unanchored: bool) -> list[Any]:
    from math_verify import parse  # heavy (sympy): loaded in the verifier's worker process

    return parse(normalize_answer_text(text), _configs(allow_unanchored), parsing_timeout=None)


def _gsm8k_tail(text: str) -> str | None:
    """The rest of the line after the last ``####``, if the text has one."""
    marker = text.rfind("####")
    if marker < 0:
        return None
    tail = text[marker + 4 :].strip().splitlines()
    return tail[0] if tail else None


def _extract_parsed(text: str, require_anchor: bool) -> list[Any]:
    """math-verify's parse result (``[sympy_value, raw_string]``, ``[raw_string]`` or ``[]``)."""
    if "\\boxed" not in text and "\\fbox" not in text:
        tail = _gsm8k_tail(text)
        if tail:
            # "#### 42" is itself the anchor, so the tail may be read without one.
            parsed = _parse(tail, allow_unanchored=True)
            if parsed:
                return parsed
    return _parse(text, allow_unanchored=not require_anchor)


def _as_string(parsed: list[Any]) -> str | None:
    """The answer as the completion wrote it (math-verify appends the raw match as a str)."""
    for item in parsed:
        if isinstance(item, str):
            return item
    return str(parsed[0]) if parsed else None


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> tuple[Any, ...]:
    """Parse a gold answer given as bare LaTeX, a number, or text that already has ``\\boxed``."""
    gold = gold.strip()
    if not gold:
        return ()
    attempts = [gold] if "\\boxed" in gold else [f"\\boxed{{{gold}}}", f"${gold}$", gold]
    for attempt in attempts:
        parsed = _parse(attempt, allow_unanchored=True)
        if parsed:
            return tuple(parsed)
    return ()


# Numbers are compared as numbers (math-verify rounds both sides to 6 decimals, so every value
# below 5e-7 equals 0 and large values must agree to the last digit): where the gold and the
# answer are each one finite real number, integers and fractions on both sides must be equal,
# and otherwise the two values must agree to NUMERIC_REL_TOL relative to the larger one. An
# answer that carries a decimal is an approximation, so it matches an exact gold (1/3, √2,
# 10^{-25}) written to six significant digits; values a factor of 1.001 apart, or of opposite
# sign, never match; zero matches only zero. Irrational exact values (√8 against 2√2) are
# compared at 50 digits. Everything else — symbols, sets, tuples, intervals, equations, text —
# is math-verify's ``verify``. Why 1e-5 and not Qwen2.5-Math's 1e-4: MATH-500's gold ``.35625``
# and the wrong ``.35626`` differ by 2.8e-5; no shipped gold is a value rounded further than
# its question asks (docs/rewards.md, "Numbers").
NUMERIC_REL_TOL = 1e-5
_EXACT_REL_TOL = 1e-30  # two exact expressions evaluated at 50 digits: equal, or they differ
_DIGITS = 50

# A bound written where a value belongs (``\le 7``, ``> 7``): math-verify drops the relation
# and reads the number, so the relation is compared here. ``\approx`` is not a bound.
_RELATION = re.compile(r"^\s*(?:\\(?:leqslant|geqslant|leq?|geq?|lt|gt|neq?)(?![A-Za-z])|[<>≤≥≠])")


def _relation(raw: str | None) -> str:
    match = _RELATION.match(raw or "")
    if match is None:
        return ""
    word = match.group().strip().lstrip("\\")
    return {"leq": "le", "leqslant": "le", "≤": "le", "<": "lt", "geq": "ge", "geqslant": "ge", "≥": "ge", ">": "gt",
            "neq": "ne", "≠": "ne"}.get(word, word)


def _number(parsed: Sequence[Any]) -> tuple[Any, Any, bool] | None:
    """``(expression, value at 50 digits, exact)`` when math-verify's parse is one finite real
    number (``2.88 \\times 10^{-19}``, ``\\frac{1}{3}``, ``\\sqrt{2}``, ``602000…``), else
    ``None``. ``exact``: no decimal in it."""
    import sympy  # heavy: loaded in the verifier's worker process

    expr = next((x for x in parsed if isinstance(x, sympy.Basic)), None)
    if not isinstance(expr, sympy.Expr) or not expr.is_number:
        return None
    value = sympy.N(expr, _DIGITS)
    if value.is_real is not True or value.is_finite is not True:
        return None  # complex, infinite or undefined: math-verify's
    return expr, value, not expr.has(sympy.Float)


def numbers_agree(gold: tuple[Any, Any, bool], answer: tuple[Any, Any, bool]) -> bool:
    """The numeric rule (see :data:`NUMERIC_REL_TOL`) on two :func:`_number` results."""
    (x, a, a_exact), (y, b, b_exact) = gold, answer
    if a_exact and b_exact and x.is_rational is True and y.is_rational is True:
        return bool((x - y).doit() == 0)  # integers and fractions: exactly
    tol = _EXACT_REL_TOL if a_exact and b_exact else NUMERIC_REL_TOL
    return bool(abs(a - b) <= tol * max(abs(a), abs(b)))


def _check(completion: str, gold: str, require_anchor: bool) -> Verdict:
    from math_verify import verify  # heavy (sympy): loaded in the verifier's worker process

    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        return Verdict.wrong("gold answer unparseable")
    pred = _extract_parsed(completion, require_anchor)
    if not pred:
        return Verdict.wrong("no answer found")
    extracted = _as_string(pred)
    if _relation(extracted) != _relation(_as_string(list(gold_parsed))):
        return Verdict.wrong("wrong answer: a bound where the gold is a value" if _relation(extracted)
                             else "wrong answer: a value where the gold is a bound", extracted)
    gold_number, answer_number = _number(gold_parsed), _number(pred)
    if gold_number is not None and answer_number is not None:
        correct = numbers_agree(gold_number, answer_number)
    else:
        correct = verify(list(gold_parsed), pred, timeout_seconds=None)
    if correct:
        return Verdict.right("correct", extracted)
    return Verdict.wrong("wrong answer", extracted)


def _extract(text: str, require_anchor: bool) -> str | None:
    return _as_string(_extract_parsed(text, require_anchor))


# --------------------------------------------------------------------------------------------
# The worker pool.
# --------------------------------------------------------------------------------------------


def _current_address_space() -> int:
    """Bytes of virtual address space this process maps now (Linux); 0 when unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _worker_entry(fd: int) -> None:
    """Main of a worker process: set up, then answer ``(fn, args)`` jobs until told to stop.

    The parent first sends ``(sys_path, memory_mb)`` so that functions defined in modules it
    can import (tests, user code) can be unpickled here too.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    conn = multiprocessing.connection.Connection(fd)
    sys_path, memory_mb = conn.recv()
    sys.path[:] = sys_path
    import math_verify  # noqa: F401  (imported before reporting ready, so jobs start warm)

    # The pool enforces time limits; math-verify would otherwise warn about that once.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    if memory_mb is not None:
        in_use = _current_address_space()
        if in_use:
            _, hard = resource.getrlimit(resource.RLIMIT_AS)
            resource.setrlimit(resource.RLIMIT_AS, (in_use + memory_mb * 2**20, hard))
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent went away
        if message is None:
            return
        fn, args = message
        try:
            reply: tuple[str, Any] = ("ok", fn(*args))
        except BaseException as exc:  # math-verify's TimeoutException is a BaseException
            reply = ("error", f"{type(exc).__name__}: {exc}"[:300])
        try:
            conn.send(reply)
        except Exception as exc:  # e.g. an unpicklable result
            conn.send(("error", f"unsendable result: {type(exc).__name__}"))


_SRC_DIR = str(Path(__file__).resolve().parents[2])  # the directory holding the skpo package


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    conn: multiprocessing.connection.Connection
    started_at: float
    ready: bool = False
    job: int | None = None
    deadline: float = 0.0

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.conn.close()


@dataclass(frozen=True)
class JobOutcome:
    """What happened to one job sent to a :class:`MathVerifierPool`.

    ``status`` is ``"ok"`` (``value`` is the function's return value), ``"timeout"``,
    ``"error"`` (the function raised; ``value`` names the exception) or ``"crashed"`` (the
    worker process died; ``value`` says how).
    """

    status: str
    value: Any = None
    seconds: float = 0.0


@dataclass
class MathVerifierPool:
    """A fixed number of worker processes whose jobs can be cut off at a deadline.

    Unlike ``concurrent.futures.ProcessPoolExecutor``, a job that overruns costs only its own
    worker: that process is killed (``SIGKILL``) and a fresh one started while the rest of
    the batch goes on. Calls from several threads are serialised (one batch at a time).

    Workers are plain ``python -c`` subprocesses talking over a socket pair, not
    ``multiprocessing`` children: they never re-import the caller's ``__main__`` (so scripts
    without an ``if __name__ == "__main__"`` guard work) and no ``fork`` of a threaded
    trainer happens beyond the usual fork-exec of ``subprocess``.

    Args:
        workers: number of worker processes.
        timeout_s: default per-job deadline, counted from when a worker picks the job up.
        memory_mb: address space a worker may grow by after start-up (``None``: no cap).
        startup_timeout_s: how long a new worker may take to import sympy and report ready.
        python: interpreter for the workers (default: the current one).
    """

    workers: int = 2
    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int | None = DEFAULT_WORKER_MEMORY_MB
    startup_timeout_s: float = 120.0
    python: str = sys.executable
    restarts: int = field(default=0, init=False)
    _pool: list[_Worker] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be >= 1")

    # -- lifecycle ------------------------------------------------------------------------

    def _start_worker(self) -> _Worker:
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC_DIR, env.get("PYTHONPATH")) if p)
        child_fd = child_sock.fileno()
        try:
            process = subprocess.Popen(
                [
                    self.python,
                    "-c",
                    f"from skpo.rewards.math import _worker_entry; _worker_entry({child_fd})",
                ],
                pass_fds=(child_fd,),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            child_sock.close()
        conn = multiprocessing.connection.Connection(parent_sock.detach())
        conn.send((list(sys.path), self.memory_mb))
        return _Worker(process=process, conn=conn, started_at=time.monotonic())

    def _fill(self) -> None:
        while len(self._pool) < self.workers:
            self._pool.append(self._start_worker())

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._pool.remove(worker)
        self.restarts += 1
        self._pool.append(self._start_worker())

    def close(self) -> None:
        """Stop all workers. The pool cannot be used afterwards."""
        with self._lock:
            self._closed = True
            for worker in self._pool:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
            for worker in self._pool:
                try:
                    worker.process.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
                worker.kill()
            self._pool.clear()

    def __enter__(self) -> MathVerifierPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (for tests and monitoring)."""
        return [w.process.pid for w in self._pool]

    # -- running jobs ---------------------------------------------------------------------

    def run(
        self,
        fn: Callable[..., Any],
        args_list: Sequence[tuple[Any, ...]],
        timeout_s: float | None = None,
    ) -> list[JobOutcome]:
        """Run ``fn(*args)`` for every ``args`` in the workers; outcomes come back in order.

        ``fn`` must be picklable by reference (a module-level function). Each job gets
        ``timeout_s`` seconds (default: the pool's) from the moment a worker starts it.
        """
        limit = self.timeout_s if timeout_s is None else timeout_s
        if limit <= 0:
            raise ValueError("timeout_s must be positive")
        with self._lock:
            if self._closed:
                raise RuntimeError("MathVerifierPool is closed")
            self._fill()
            try:
                return self._run_locked(fn, args_list, limit)
            except BaseException:
                # Interrupted (Ctrl-C, a worker that would not start): a worker still busy
                # would answer into the next batch, so replace every busy one.
                for worker in [w for w in self._pool if w.job is not None]:
                    worker.job = None
                    self._replace(worker)
                raise

    def _run_locked(
        self, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]], limit: float
    ) -> list[JobOutcome]:
        outcomes: list[JobOutcome | None] = [None] * len(args_list)
        pending = deque(range(len(args_list)))
        started: dict[int, float] = {}

        def finish(worker: _Worker, outcome: JobOutcome) -> None:
            assert worker.job is not None
            outcomes[worker.job] = outcome
            worker.job = None

        while pending or any(w.job is not None for w in self._pool):
            now = time.monotonic()
            for worker in self._pool:
                if worker.ready and worker.job is None and pending:
                    index = pending.popleft()
                    worker.conn.send((fn, tuple(args_list[index])))
                    worker.job, worker.deadline = index, now + limit
                    started[index] = now

            wake_at = [w.deadline for w in self._pool if w.job is not None]
            wake_at += [w.started_at + self.startup_timeout_s for w in self._pool if not w.ready]
            wait_s = max(0.0, min(wake_at) - time.monotonic()) if wake_at else None
            readable = multiprocessing.connection.wait([w.conn for w in self._pool], wait_s)

            for worker in list(self._pool):
                if worker.conn in readable:
                    try:
                        status, value = worker.conn.recv()
                    except (EOFError, OSError):
                        self._on_death(worker, finish, started)
                        continue
                    if status == "ready":
                        worker.ready = True
                    elif worker.job is not None:
                        seconds = time.monotonic() - started[worker.job]
                        finish(worker, JobOutcome(status, value, seconds))
                elif worker.job is not None and time.monotonic() >= worker.deadline:
                    finish(worker, JobOutcome("timeout", None, limit))
                    self._replace(worker)
                elif not worker.ready and time.monotonic() >= worker.started_at + self.startup_timeout_s:
                    worker.kill()
                    self._pool.remove(worker)
                    raise RuntimeError(
                        f"math verifier worker did not start within {self.startup_timeout_s:.0f}s"
                    )
        return [outcome for outcome in outcomes if outcome is not None]

    def _on_death(
        self,
        worker: _Worker,
        finish: Callable[[_Worker, JobOutcome], None],
        started: dict[int, float],
    ) -> None:
        try:
            code: int | None = worker.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        if not worker.ready:
            worker.kill()
            self._pool.remove(worker)
            raise RuntimeError(f"math verifier worker exited during start-up (exit code {code})")
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        if worker.job is not None:
            finish(worker, JobOutcome("crashed", how, time.monotonic() - started[worker.job]))
        self._replace(worker)

    # -- math-specific entry points -------------------------------------------------------

    def verify_batch(
        self,
        completions: Sequence[str],
        golds: Sequence[str | int | float],
        timeout_s: float | None = None,
        require_anchor: bool = False,
    ) -> list[Verdict]:
        """One :class:`Verdict` per (completion, gold) pair; see :func:`verify_math_batch`."""
        if len(completions) != len(golds):
            raise ValueError(f"{len(completions)} completions but {len(golds)} golds")
        limit = self.timeout_s if timeout_s is None else timeout_s
        jobs = [(str(c), _gold_text(g), require_anchor) for c, g in zip(completions, golds)]
        return [_outcome_to_verdict(o, limit) for o in self.run(_check, jobs, limit)]

    def extract_batch(
        self, texts: Sequence[str], timeout_s: float | None = None, require_anchor: bool = False
    ) -> list[str | None]:
        """The extracted answer of each text (``None``: none found, or it timed out)."""
        outcomes = self.run(_extract, [(str(t), require_anchor) for t in texts], timeout_s)
        return [o.value if o.status == "ok" else None for o in outcomes]


def _gold_text(gold: str | int | float) -> str:
    if isinstance(gold, bool) or not isinstance(gold, (str, int, float)):
        raise TypeError(f"gold must be a string or a number, got {type(gold).__name__}")
    return gold if isinstance(gold, str) else repr(gold) if isinstance(gold, float) else str(gold)


def _outcome_to_verdict(outcome: JobOutcome, limit: float) -> Verdict:
    if outcome.status == "ok":
        return outcome.value
    if outcome.status == "timeout":
        return Verdict.wrong(f"timeout after {limit:.1f}s")
    if outcome.status == "crashed":
        return Verdict.wrong(f"verifier crashed ({outcome.value})")
    return Verdict.wrong(f"verifier error: {outcome.value}")


# --------------------------------------------------------------------------------------------
# Module-level API on a shared, lazily started pool.
# --------------------------------------------------------------------------------------------

_default_pool: MathVerifierPool | None = None
_default_lock = threading.Lock()


def default_pool(workers: int | None = None) -> MathVerifierPool:
    """The shared pool behind the module-level functions, started on first use.

    ``workers`` (or ``$SKPO_MATH_WORKERS``) sizes it when it is first created; the default
    is ``min(4, cpu_count)``. Passing a different size later replaces the pool.
    """
    global _default_pool
    with _default_lock:
        wanted = workers or int(os.environ.get("SKPO_MATH_WORKERS", "0")) or min(4, os.cpu_count() or 1)
        if _default_pool is not None and (workers is None or _default_pool.workers == wanted):
            return _default_pool
        if _default_pool is not None:
            _default_pool.close()
        _default_pool = MathVerifierPool(workers=wanted)
        return _default_pool


def shutdown_default_pool() -> None:
    """Stop the shared pool's workers (a later call starts a new pool)."""
    global _default_pool
    with _default_lock:
        if _default_pool is not None:
            _default_pool.close()
            _default_pool = None


atexit.register(shutdown_default_pool)


def _forget_parent_pool() -> None:
    """In a forked child (a user reward's worker): the parent's workers and sockets are the
    parent's; the child starts a pool of its own if it verifies math."""
    global _default_pool, _default_lock
    _default_pool, _default_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_parent_pool)


def verify_math_batch(
    completions: Sequence[str],
    golds: Sequence[str | int | float],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    require_anchor: bool = False,
    pool: MathVerifierPool | None = None,
) -> list[Verdict]:
    """Score each completion against its gold answer, in parallel, each within ``timeout_s``.

    Args:
        completions: model outputs.
        golds: gold answers: LaTeX (MATH), numbers (AIME/AMC), or :func:`gold_from_gsm8k`.
        timeout_s: per-item wall-clock bound; an item that exceeds it scores 0 with reason
            ``"timeout after Ns"``.
        require_anchor: only accept ``\\boxed{}``, ``####`` or "answer"-anchored answers,
            never a bare trailing number.
        pool: the worker pool to use (default: the shared :func:`default_pool`).
    """
    return (pool or default_pool()).verify_batch(completions, golds, timeout_s, require_anchor)


def verify_math(
    completion: str,
    gold: str | int | float,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    require_anchor: bool = False,
    pool: MathVerifierPool | None = None,
) -> Verdict:
    """Score one completion against a gold answer; see :func:`verify_math_batch`."""
    return verify_math_batch([completion], [gold], timeout_s, require_anchor=require_anchor, pool=pool)[0]


def extract_answer(
    text: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    require_anchor: bool = False,
    pool: MathVerifierPool | None = None,
) -> str | None:
    """The final answer of ``text`` as written (e.g. ``"\\frac{1}{2}"``, ``"42"``), or ``None``."""
    return (pool or default_pool()).extract_batch([text], timeout_s, require_anchor)[0]


def gold_from_gsm8k(answer_field: str) -> str:
    """The gold number of a GSM8K ``answer`` field: the text after the last ``#### ``.

    Thousands separators are dropped (``"#### 1,000"`` gives ``"1000"``).
    """
    tail = _gsm8k_tail(answer_field)
    if tail is None:
        raise ValueError("GSM8K answer field has no '####' line")
    return tail.replace(",", "").strip()
