"""Code verifier: run a model's Python program against tests in a sandboxed subprocess.

A completion is correct when the program (solution + tests) runs to the end without raising.
Model-written code is untrusted: it may loop forever, fork-bomb, allocate without bound,
write anywhere it can, signal its parent, or look for secrets. The sandbox here is built
from plain POSIX pieces so that it works anywhere Python runs as root (containers, CI
machines) without extra tooling:

* **A separate interpreter**, ``python -I -B`` (isolated: no ``PYTHON*`` variables, no
  user site, script directory not on ``sys.path``), in its own session
  (``start_new_session``), with stdin closed and a **minimal environment** built from
  scratch (nothing of the host's environment is inherited).
* **An unprivileged identity** when the host runs as root: every concurrently running
  sandbox gets its own uid/gid from a reserved range (default 2000000000 and up, not in
  ``/etc/passwd``), with no supplementary groups. It cannot write root's files or the
  repository, cannot signal the host or read its ``/proc/<pid>/environ``, and, because the
  uid is exclusive, ``RLIMIT_NPROC`` is a per-sandbox process cap and every process the
  program leaves behind (even one that called ``setsid``) can be found and killed by uid.
* **Resource limits**, set by a short trusted bootstrap inside the child before any model
  code runs: address space (``RLIMIT_AS``), CPU seconds, processes/threads, file size,
  open files, no core dumps. They are set in the child rather than in ``preexec_fn``
  because ``preexec_fn`` is documented as unsafe in threaded programs, and both the
  trainer and :func:`run_python_batch` call this from threads; the uid switch itself is
  done by ``subprocess`` (``user=``/``group=``/``extra_groups=``) in C.
* **A wall-clock timeout** after which the whole process group is killed with ``SIGKILL``,
  followed by a sweep that kills any remaining process of the sandbox uid.
* **A scratch directory** (fresh, owned by the sandbox uid, ``HOME`` and ``TMPDIR`` point
  there) that is deleted afterwards, together with anything the uid left in the
  world-writable ``/tmp``, ``/var/tmp``, ``/dev/shm`` and ``/run/lock``.
* **Bounded output**: stdout/stderr go to files the child cannot grow beyond the file-size
  limit; at most ``max_output_bytes`` of each is read back.
* **Proof that the tests finished**: the bootstrap prints a per-run random token after the
  program returns normally; a program that leaves early with exit status 0
  (``sys.exit(0)``, ``os._exit(0)``, ``os.execv``) does not print it and scores 0.

What it does not do (see ``docs/rewards.md``): no network, mount or PID namespace, no
seccomp filter, no cgroup (memory is capped per process, so a sandbox may use up to
``max_processes * memory_mb``), read access to every world-readable file, and without root
no uid switch at all (then the program runs as the host user; use a container).
"""

from __future__ import annotations

import errno
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from skpo.rewards.base import Verdict

__all__ = [
    "SandboxLimits",
    "SandboxResult",
    "humaneval_program",
    "run_python_batch",
    "run_python_sandboxed",
    "run_sandboxed",
    "sandbox_identity_mode",
    "verify_humaneval",
    "verify_humaneval_batch",
]

DEFAULT_UID_BASE = 2_000_000_000  # far above human and system accounts, below 2**31
DEFAULT_SLOTS = 64  # sandboxes that may run at the same time (one uid each)
NOBODY = 65534
WORLD_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed run.

    Attributes:
        timeout_s: wall-clock seconds before the process group is killed.
        memory_mb: address space per process (``RLIMIT_AS``).
        max_processes: processes and threads the sandbox uid may have at once
            (``RLIMIT_NPROC``), the main process included. Total memory of a sandbox can
            reach ``max_processes * memory_mb``, so keep this small.
        max_file_mb: largest file the program may write (``RLIMIT_FSIZE``), stdout included.
        max_open_files: ``RLIMIT_NOFILE``.
        max_output_bytes: how much of stdout and of stderr is read back.
    """

    timeout_s: float = 5.0
    memory_mb: int = 512
    max_processes: int = 8
    max_file_mb: int = 16
    max_open_files: int = 64
    max_output_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if self.memory_mb < 64:
            raise ValueError("memory_mb below 64 leaves no room for the interpreter")
        if self.max_processes < 1 or self.max_open_files < 16 or self.max_file_mb < 1:
            raise ValueError("limits too small to start Python")


@dataclass(frozen=True)
class SandboxResult:
    """Everything observed about one sandboxed run.

    ``returncode`` is the main process's exit status (negative: killed by that signal);
    ``finished`` says whether the bootstrap confirmed that the program ran to its end;
    ``leftover_killed`` counts processes of the sandbox uid still alive after the main
    process was gone (children it spawned) that had to be killed.
    """

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    finished: bool
    seconds: float
    uid: int | None
    leftover_killed: int


# ------------------------------------------------------------------------------------------
# The bootstrap: trusted code that runs inside the sandbox before the program.
# ------------------------------------------------------------------------------------------

_BOOTSTRAP = r"""
import os, resource, sys

def _limit(name, value):
    resource.setrlimit(getattr(resource, name), (value, value))

def _main():
    token = b""
    while not token.endswith(b"\n"):
        chunk = os.read(0, 64)
        if not chunk:
            break
        token += chunk
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    memory, cpu, nproc, fsize, nofile = (int(v) for v in sys.argv[1:6])
    _limit("RLIMIT_CORE", 0)
    _limit("RLIMIT_NOFILE", nofile)
    _limit("RLIMIT_FSIZE", fsize)
    _limit("RLIMIT_NPROC", nproc)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    _limit("RLIMIT_AS", memory)
    sys.argv = ["program.py"]
    with open("program.py", encoding="utf-8") as handle:
        source = handle.read()
    namespace = {"__name__": "__main__", "__file__": "program.py", "__builtins__": __builtins__}
    try:
        exec(compile(source, "program.py", "exec"), namespace)
    except SystemExit:
        import traceback
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    os.write(1, b"\n" + token)

_main()
"""

_TOKEN_PREFIX = "__skpo_sandbox_finished_"


# ------------------------------------------------------------------------------------------
# Identities: which uid a sandbox runs as.
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Identity:
    uid: int | None  # None: run as the host user
    gid: int | None
    exclusive: bool  # True when no other sandbox (or anything else) uses this uid now


class _IdentityPool:
    """Hands out one uid per concurrently running sandbox."""

    def __init__(self, base: int, slots: int) -> None:
        if base < 1000 or slots < 1 or base + slots > 2**31 - 1:
            raise ValueError(f"sandbox uid range [{base}, {base + slots}) must lie in [1000, 2**31 - 1)")
        self._condition = threading.Condition()
        self._free = [uid for uid in range(base, base + slots) if not _uid_has_account(uid)]
        if not self._free:
            raise RuntimeError(f"no free sandbox uid in [{base}, {base + slots})")

    @contextmanager
    def acquire(self) -> Iterator[_Identity]:
        with self._condition:
            while not self._free:
                self._condition.wait()
            # First in, first out: a uid whose killed processes are still being reaped
            # (zombies count against RLIMIT_NPROC) rests as long as possible.
            uid = self._free.pop(0)
        try:
            yield _Identity(uid, uid, exclusive=True)
        finally:
            with self._condition:
                self._free.append(uid)
                self._condition.notify()


def _uid_has_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


@dataclass
class _Setup:
    mode: str  # "exclusive-uid", "nobody" or "host-user"
    python: str
    identities: _IdentityPool | None


_setup: _Setup | None = None
_setup_lock = threading.Lock()


def _interpreter_candidates() -> list[str]:
    found = [
        os.environ.get("SKPO_SANDBOX_PYTHON"),
        sys.executable,
        os.path.realpath(sys.executable),
        getattr(sys, "_base_executable", None),
        "/usr/bin/python3",
        "/usr/local/bin/python3",
        shutil.which("python3", path=_SAFE_PATH),
    ]
    unique: list[str] = []
    for path in found:
        if path and path not in unique and os.path.isfile(path):
            unique.append(path)
    return unique


def _probe(python: str, identity: _Identity) -> bool:
    """Whether ``python`` runs a trivial program to completion, really as ``identity``."""
    program = "import os\nprint(os.getuid(), os.geteuid(), os.getgid(), os.getegid(), len(os.getgroups()))\n"
    try:
        result = _run(python, program, SandboxLimits(timeout_s=30.0), identity)
    except OSError:  # e.g. setuid refused in a user namespace
        return False
    if not result.finished:
        return False
    if identity.uid is None:
        return True
    expected = f"{identity.uid} {identity.uid} {identity.gid} {identity.gid} 0"
    return result.stdout.strip() == expected


def _get_setup() -> _Setup:
    """Decide once how sandboxes run here: which uid scheme and which interpreter.

    An interpreter must be executable by the sandbox uid: a virtualenv under a private
    home directory (``/root`` is usually 0700) is not, so the probe falls back to the
    system Python (``$SKPO_SANDBOX_PYTHON`` overrides). The sandbox gets that
    interpreter's standard library and site-packages, not the host's virtualenv.
    """
    global _setup
    with _setup_lock:
        if _setup is not None:
            return _setup
        candidates = _interpreter_candidates()
        if os.geteuid() == 0:
            base = int(os.environ.get("SKPO_SANDBOX_UID_BASE", DEFAULT_UID_BASE))
            slots = int(os.environ.get("SKPO_SANDBOX_SLOTS", DEFAULT_SLOTS))
            identities = _IdentityPool(base, slots)
            with identities.acquire() as identity:
                for python in candidates:
                    if _probe(python, identity):
                        _setup = _Setup("exclusive-uid", python, identities)
                        return _setup
            shared = _Identity(NOBODY, NOBODY, exclusive=False)
            for python in candidates:
                if _probe(python, shared):
                    _setup = _Setup("nobody", python, None)
                    return _setup
            raise RuntimeError(f"no Python interpreter runs as an unprivileged uid; tried {candidates}")
        host = _Identity(None, None, exclusive=False)
        for python in candidates:
            if _probe(python, host):
                _setup = _Setup("host-user", python, None)
                return _setup
        raise RuntimeError(f"no usable Python interpreter for the sandbox; tried {candidates}")


def sandbox_identity_mode() -> str:
    """How sandboxes run on this machine: ``"exclusive-uid"`` (root: one private uid per
    sandbox), ``"nobody"`` (root, but the uid range could not be used: shared uid 65534,
    weaker process cap and clean-up), or ``"host-user"`` (not root: no uid switch)."""
    return _get_setup().mode


@contextmanager
def _identity() -> Iterator[tuple[_Identity, str]]:
    setup = _get_setup()
    if setup.identities is not None:
        with setup.identities.acquire() as identity:
            yield identity, setup.python
    elif setup.mode == "nobody":
        yield _Identity(NOBODY, NOBODY, exclusive=False), setup.python
    else:
        yield _Identity(None, None, exclusive=False), setup.python


# ------------------------------------------------------------------------------------------
# Running one program.
# ------------------------------------------------------------------------------------------


def _minimal_env(scratch: str) -> dict[str, str]:
    return {
        "PATH": _SAFE_PATH,
        "HOME": scratch,
        "TMPDIR": scratch,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        # Each thread counts against the process limit: keep numeric libraries single-threaded.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _read_capped(path: Path, limit: int) -> tuple[str, bytes]:
    """The first ``limit`` bytes of a file (decoded) and its last 256 bytes (raw)."""
    with path.open("rb") as handle:
        head = handle.read(limit)
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - 256))
        tail = handle.read()
    text = head.decode("utf-8", errors="replace")
    if size > limit:
        text += f"\n[... {size - limit} more bytes not read]"
    return text, tail


def _uids_and_state(pid: int | str) -> tuple[set[int], str] | None:
    """Real/effective/saved uids and state letter of a process, from ``/proc/<pid>/status``.

    ``status`` is used rather than the owner of ``/proc/<pid>``, which becomes root when a
    process makes itself non-dumpable.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            status = handle.read()
    except OSError:
        return None
    uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)", status, re.MULTILINE)
    state = re.search(r"^State:\s+(\S)", status, re.MULTILINE)
    if uids is None:
        return None
    return {int(u) for u in uids.groups()}, state.group(1) if state else "?"


def _processes_of(uid: int) -> tuple[list[int], int]:
    """Live processes whose real, effective or saved uid is ``uid``, and how many zombies."""
    live, zombies = [], 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            info = _uids_and_state(entry.name)
            if info is not None and uid in info[0]:
                if info[1] in "ZX":
                    zombies += 1
                else:
                    live.append(int(entry.name))
    return live, zombies


def _kill_pid_of_uid(pid: int, uid: int) -> None:
    """SIGKILL ``pid`` if it still belongs to ``uid``.

    The pidfd is opened before the uid check, so a pid reused in between is never hit.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        info = _uids_and_state(pid)
        if info is None or uid not in info[0]:
            return
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _kill_all_of(uid: int, patience_s: float = 5.0, zombie_wait_s: float = 0.2) -> int:
    """Kill every process of an exclusive sandbox uid; returns how many were alive.

    Killed orphans become zombies until init reaps them, and zombies still count against
    the uid's process limit. They are waited for only briefly: uids are handed out first
    in, first out, so the next sandbox with this uid comes many runs later.
    """
    killed: set[int] = set()
    started = time.monotonic()
    while True:
        live, zombies = _processes_of(uid)
        waited = time.monotonic() - started
        if not live and (not zombies or waited > zombie_wait_s):
            break
        if waited > patience_s:  # unkillable (e.g. stuck in the kernel): give up
            break
        for pid in live:
            _kill_pid_of_uid(pid, uid)
        killed.update(live)
        time.sleep(0.005)
    return len(killed)


def _remove_owned_by(uid: int) -> None:
    """Delete what an exclusive sandbox uid left at the top of world-writable directories."""
    for directory in WORLD_WRITABLE_DIRS:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
                if info.st_uid != uid:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass


def _signal_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _run(python: str, program: str, limits: SandboxLimits, identity: _Identity) -> SandboxResult:
    scratch = tempfile.mkdtemp(prefix="skpo-sandbox-")
    capture = tempfile.mkdtemp(prefix="skpo-sandbox-out-")  # host-only: 0700, not chowned
    token = f"{_TOKEN_PREFIX}{secrets.token_hex(16)}__"
    leftovers = 0
    try:
        program_path = Path(scratch, "program.py")
        program_path.write_text(program, encoding="utf-8")
        if identity.uid is not None:
            for path in (scratch, str(program_path)):
                os.chown(path, identity.uid, identity.gid if identity.gid is not None else -1)
        stdout_path, stderr_path = Path(capture, "stdout"), Path(capture, "stderr")
        argv = [
            python,
            "-I",
            "-B",
            "-c",
            _BOOTSTRAP,
            str(limits.memory_mb * 2**20),
            str(int(limits.timeout_s) + 1),
            str(limits.max_processes),
            str(limits.max_file_mb * 2**20),
            str(limits.max_open_files),
        ]
        user_args: dict[str, Any] = {}
        if identity.uid is not None:
            user_args = {"user": identity.uid, "group": identity.gid, "extra_groups": []}
        started = time.monotonic()
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            process = subprocess.Popen(
                argv,
                cwd=scratch,
                env=_minimal_env(scratch),
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                start_new_session=True,
                umask=0o077,
                close_fds=True,
                **user_args,
            )
        try:
            assert process.stdin is not None
            try:
                process.stdin.write(token.encode() + b"\n")
                process.stdin.close()
            except BrokenPipeError:
                pass
            timed_out = False
            try:
                returncode = process.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _signal_group(process.pid)  # not reaped yet: the group id cannot be reused
                returncode = process.wait()
        finally:
            if process.poll() is None:
                _signal_group(process.pid)
                process.wait()
        seconds = time.monotonic() - started
        if identity.exclusive and identity.uid is not None:
            leftovers = _kill_all_of(identity.uid)
            _remove_owned_by(identity.uid)
        elif not timed_out:
            _signal_group(process.pid)  # children still in the group
        stdout, tail = _read_capped(stdout_path, limits.max_output_bytes)
        stderr, _ = _read_capped(stderr_path, limits.max_output_bytes)
        finished = returncode == 0 and not timed_out and tail.rstrip(b"\n").endswith(token.encode())
        stdout = stdout.replace(f"\n{token}\n", "")
        return SandboxResult(
            returncode=returncode,
            stdout=stdout,
            stderr=stderr,
            timed_out=timed_out,
            finished=finished,
            seconds=seconds,
            uid=identity.uid,
            leftover_killed=leftovers,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(capture, ignore_errors=True)


def run_sandboxed(program: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run a Python program in the sandbox and report what happened (no verdict)."""
    limits = limits or SandboxLimits()
    with _identity() as (identity, python):
        return _run(python, program, limits, identity)


# ------------------------------------------------------------------------------------------
# Turning a run into a verdict.
# ------------------------------------------------------------------------------------------

_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")


def _last_exception(stderr: str) -> tuple[str, str] | None:
    """Name and message of the last exception a Python traceback in ``stderr`` ends with.

    A traceback is "Traceback (most recent call last):", indented frame lines, then the
    unindented ``Name: message`` line, which is the one wanted.
    """
    found = None
    in_traceback = False
    for line in stderr.splitlines():
        if line.startswith("Traceback (most recent call last):"):
            in_traceback = True
        elif in_traceback and not line.startswith((" ", "\t")):
            in_traceback = False
            match = _EXCEPTION_LINE.match(line)
            if match:
                found = (match.group(1).rsplit(".", 1)[-1], match.group(2) or "")
    return found


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _explain(result: SandboxResult, limits: SandboxLimits) -> str:
    if result.finished:
        return "passed"
    if result.timed_out:
        return f"timeout after {limits.timeout_s:.1f}s"
    code = result.returncode
    exception = _last_exception(result.stderr)
    if code < 0:
        if -code == signal.SIGXCPU:
            return "killed: cpu time limit"
        if -code == signal.SIGXFSZ:
            return "killed: file size limit"
        if exception is None or exception[0] != "MemoryError":
            return f"killed: {_signal_name(-code)}"
    if exception is None:
        if code == 0:
            return "exited before tests finished"
        return f"error: exit status {code}"
    name, message = exception
    if name == "MemoryError":
        return "killed: memory limit (MemoryError)"
    if name == "BlockingIOError" and f"[Errno {errno.EAGAIN}]" in message:
        return "process limit reached (fork failed)"
    if name == "OSError" and "File too large" in message:
        return "file size limit exceeded"
    if name == "SystemExit":
        return "exited before tests finished (SystemExit)"
    if name == "AssertionError":
        return "test failed: AssertionError"
    if name in ("SyntaxError", "IndentationError", "TabError"):
        return f"syntax error: {name}"
    if code == 0:
        return "exited before tests finished"
    return f"error: {name}"


def _verdict(result: SandboxResult, limits: SandboxLimits) -> Verdict:
    reason = _explain(result, limits)
    return Verdict.right(reason) if result.finished else Verdict.wrong(reason)


def run_python_sandboxed(
    code: str,
    tests: str,
    entry_point: str | None,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    max_processes: int = 8,
    **limits: Any,
) -> Verdict:
    """Run ``code`` then ``tests`` (then ``check(entry_point)`` if given) in the sandbox.

    Reward 1 only when the whole program runs to its end; otherwise 0 with a reason such
    as ``"test failed: AssertionError"``, ``"timeout after 5.0s"``,
    ``"killed: memory limit (MemoryError)"``, ``"process limit reached (fork failed)"``
    or ``"error: NameError"``. Extra keyword arguments go to :class:`SandboxLimits`.
    """
    sandbox_limits = SandboxLimits(timeout_s=timeout_s, memory_mb=memory_mb, max_processes=max_processes, **limits)
    program = f"{code}\n\n{tests}\n"
    if entry_point:
        program += f"\ncheck({entry_point})\n"
    return _verdict(run_sandboxed(program, sandbox_limits), sandbox_limits)


def run_python_batch(
    jobs: Sequence[tuple[str, str, str | None]],
    max_workers: int = 4,
    **options: Any,
) -> list[Verdict]:
    """:func:`run_python_sandboxed` for many ``(code, tests, entry_point)`` jobs, several
    sandboxes at a time (threads; each sandbox is its own process). Order is kept."""
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(jobs)))) as executor:
        return list(executor.map(lambda job: run_python_sandboxed(*job, **options), jobs))


# ------------------------------------------------------------------------------------------
# HumanEval.
# ------------------------------------------------------------------------------------------


def humaneval_program(completion: str, problem_row: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(code, tests, entry_point)`` of a HumanEval row: prompt + completion, the row's
    ``test`` (which defines ``check``), and the function name to pass to it."""
    code = f"{problem_row['prompt']}{completion}"
    return code, str(problem_row["test"]), str(problem_row["entry_point"])


def verify_humaneval(completion: str, problem_row: Mapping[str, Any], **options: Any) -> Verdict:
    """Score a HumanEval completion (the function body that follows the row's prompt)."""
    return run_python_sandboxed(*humaneval_program(completion, problem_row), **options)


def verify_humaneval_batch(
    completions: Sequence[str],
    problem_rows: Sequence[Mapping[str, Any]],
    max_workers: int = 4,
    **options: Any,
) -> list[Verdict]:
    """:func:`verify_humaneval` for aligned lists of completions and rows."""
    if len(completions) != len(problem_rows):
        raise ValueError(f"{len(completions)} completions but {len(problem_rows)} problem rows")
    jobs = [humaneval_program(c, row) for c, row in zip(completions, problem_rows)]
    return run_python_batch(jobs, max_workers=max_workers, **options)
