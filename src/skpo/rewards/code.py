"""Code verifier: run a model's Python program against tests in a sandbox.

A completion is correct when the tests, run against the program, all pass. Model-written
code is untrusted: it may loop forever, fork-bomb, allocate without bound, write anywhere
it can, signal its parent, reach the network, look for secrets, or try to fake a pass. The
sandbox is built from kernel namespaces and POSIX limits, with no tooling beyond Python:

* **Namespaces per sandbox**: network (only a loopback that is down: no connection to the
  host's 127.0.0.1 or anywhere else), IPC (SysV shared memory, semaphores and message
  queues die with the sandbox), mount and PID (the sandbox sees only its own processes,
  cannot signal any other, and everything in it is killed when it ends).
* **A root of its own** (``pivot_root`` onto a fresh tmpfs): the system's ``/usr`` (and
  ``/bin``, ``/lib*``) and the Python installation bound read-only, a few ``/etc`` files, a
  fresh ``/proc``, a ``/dev`` with only null, zero, full, random, urandom and a private
  ``shm`` (so no GPU), and private tmpfs on ``/tmp``, ``/var/tmp`` and ``/run``. The project's
  checkout, its data and benchmarks, runs and home directories are not there.
* **An unprivileged identity.** As root, every running sandbox gets its own uid/gid from a
  reserved range (default 2000000000 and up, not in ``/etc/passwd``), exclusive across
  processes: a uid is held through an ``flock`` on ``/run/skpo-sandbox/uid-<uid>.lock`` for
  the sandbox's lifetime, and the kernel drops the lock if its holder dies. Not root, the
  sandbox runs in an unprivileged user namespace. Either way: no capabilities,
  ``no_new_privs``, no supplementary groups, and a system-call filter that refuses
  namespaces, mounts, io_uring, kernel keyrings, memory outside the address-space limit and
  every socket but ``AF_UNIX``.
* **Resource limits** (address space, CPU seconds, processes, file size, open files, no
  core dumps), set before any model code runs. Without root, ``RLIMIT_NPROC`` counts per
  user namespace, so it is a per-sandbox cap in both modes. Where the machine allows it, a
  memory cgroup per sandbox also counts what the address-space limit does not (tmpfs files,
  shared memory): :func:`sandbox_memory_mode`.
* **A wall-clock timeout**, after which everything is killed with ``SIGKILL``, and reaped by
  this process (never left to whatever reaps orphans above it).
* **A judge that the program cannot reach** (see :mod:`skpo.rewards._sandbox_child`): the
  tests run in a separate process (pid 1 of the sandbox, non-dumpable) that asks the
  program for what it needs (call the entry point, read a global) and gets plain data or an
  opaque handle back. The tests never enter the program's memory, and the verdict reaches
  the host on a pipe the program never holds, so printing, exiting early, walking frames,
  scanning memory or patching builtins cannot turn a wrong answer into a pass.
* **Bounded output**: stdout/stderr go to host files the sandbox cannot grow beyond the
  file-size limit; at most ``max_output_bytes`` of each is read back.

If the namespaces cannot be created (no root and unprivileged user namespaces disabled, or
a container without ``CAP_SYS_ADMIN``), the first sandbox raises ``RuntimeError``: untrusted
code is never run unisolated. Limits that remain are listed in ``docs/rewards.md``.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import pwd
import re
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skpo.paths import REPO_ROOT
from skpo.rewards import _sandbox_child as _child
from skpo.rewards.base import Verdict

__all__ = [
    "SandboxLimits",
    "SandboxResult",
    "humaneval_program",
    "run_python_batch",
    "run_python_sandboxed",
    "run_sandboxed",
    "sandbox_identity_mode",
    "sandbox_memory_mode",
    "verify_humaneval",
    "verify_humaneval_batch",
]

DEFAULT_UID_BASE = 2_000_000_000  # far above human and system accounts, below 2**31
DEFAULT_SLOTS = 64  # sandboxes that may run at the same time (one uid each)
NOBODY = 65534
LOCK_DIRS = ("/run/skpo-sandbox", "/tmp/skpo-sandbox-locks")  # first usable one wins
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_CHILD = Path(__file__).with_name("_sandbox_child.py")


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed run.

    Attributes:
        timeout_s: wall-clock seconds before everything in the sandbox is killed.
        memory_mb: address space per process (``RLIMIT_AS``).
        max_processes: processes and threads the sandbox may have at once
            (``RLIMIT_NPROC``), the judge and the program's main process included. Total
            memory of a sandbox can reach ``max_processes * memory_mb``, so keep this small.
        max_file_mb: largest file the program may write (``RLIMIT_FSIZE``), stdout included;
            also the size of each private tmpfs (``/tmp``, ``/var/tmp``, ``/run``,
            ``/dev/shm``), which lives in memory.
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
        if self.max_processes < 2 or self.max_open_files < 16 or self.max_file_mb < 1:
            raise ValueError("limits too small to start Python (the judge and the program need 2 processes)")


@dataclass(frozen=True)
class SandboxResult:
    """Everything observed about one sandboxed run.

    ``finished`` says whether the judge saw the program load and every test pass (for
    :func:`run_sandboxed`, which has no tests: the program's module code returned; only
    tests make that a proof). ``returncode`` is the program's exit status (negative: killed
    by that signal); ``exception`` the name and message of the exception that ended the run,
    as the judge recorded it (raised by the program or by a failing test); ``uid`` the
    sandbox's uid on the host (``None`` in a user namespace, where it is the host user's);
    ``leftover_killed`` counts processes still alive after the tests that had to be
    killed; ``pid_namespace`` names the sandbox's PID namespace (``"pid:[...]"``, as in
    ``/proc/<pid>/ns/pid``); ``oom_killed`` whether the kernel killed a process of the sandbox
    for going over its memory cgroup's limit (:func:`sandbox_memory_mode`).
    """

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    finished: bool
    seconds: float
    uid: int | None
    leftover_killed: int
    exception: tuple[str, str] | None = None
    pid_namespace: str | None = None
    oom_killed: bool = False


class SandboxSetupError(RuntimeError):
    """The sandbox could not be built (namespaces, mounts or the uid switch were refused)."""


# ------------------------------------------------------------------------------------------
# Identities: which uid a sandbox runs as.
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Identity:
    uid: int | None  # None: the host user's, inside a user namespace
    gid: int | None
    exclusive: bool  # True when no other sandbox, in any process, uses this uid now


def _lock_directory() -> Path:
    """A root-owned directory that no sandbox uid can write, for the uid slot locks."""
    candidates = [os.environ["SKPO_SANDBOX_LOCK_DIR"]] if os.environ.get("SKPO_SANDBOX_LOCK_DIR") else LOCK_DIRS
    problems = []
    for candidate in candidates:
        try:
            os.makedirs(candidate, mode=0o755, exist_ok=True)
            info = os.lstat(candidate)
        except OSError as exc:
            problems.append(f"{candidate}: {exc}")
            continue
        # A directory a sandbox could own or write would let it hold or swap the locks.
        if stat.S_ISDIR(info.st_mode) and info.st_uid == 0 and not info.st_mode & 0o022:
            return Path(candidate)
        problems.append(f"{candidate}: not a root-owned directory closed to others")
    raise RuntimeError(f"no usable directory for sandbox uid locks: {'; '.join(problems)}")


class _IdentityPool:
    """Hands out one uid per running sandbox, exclusive across threads and processes.

    A thread first picks a uid no thread of this process holds (first in, first out, so a
    uid whose killed processes are still being reaped rests as long as possible), then takes
    its lock file with a non-blocking ``flock``; a uid another process holds is skipped. The
    lock lives as long as the sandbox; a crashed holder's lock is released by the kernel.
    """

    def __init__(self, base: int, slots: int) -> None:
        if base < 1000 or slots < 1 or base + slots > 2**31 - 1:
            raise ValueError(f"sandbox uid range [{base}, {base + slots}) must lie in [1000, 2**31 - 1)")
        self._condition = threading.Condition()
        self._free = [uid for uid in range(base, base + slots) if not _uid_has_account(uid)]
        if not self._free:
            raise RuntimeError(f"no free sandbox uid in [{base}, {base + slots})")
        self._lock_dir = _lock_directory()

    def _try_lock(self, uid: int) -> int | None:
        fd = os.open(self._lock_dir / f"uid-{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @contextmanager
    def acquire(self) -> Iterator[_Identity]:
        with self._condition:
            while True:
                taken = next(((uid, fd) for uid in self._free if (fd := self._try_lock(uid)) is not None), None)
                if taken is not None:
                    break
                # Every uid is busy here or in another process: wait for a release here, or
                # poll for one elsewhere.
                self._condition.wait(timeout=0.05)
            uid, fd = taken
            self._free.remove(uid)
        try:
            yield _Identity(uid, uid, exclusive=True)
        finally:
            os.close(fd)
            with self._condition:
                self._free.append(uid)
                self._condition.notify()


def _uid_has_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


# ------------------------------------------------------------------------------------------
# Memory: one cgroup per sandbox, where the machine lets us make one.
# ------------------------------------------------------------------------------------------

JUDGE_ALLOWANCE_MB = 64  # the judge's own memory, on top of memory_mb, in a sandbox's cgroup
_CGROUP_PREFIX = "skpo-sandbox-"


@dataclass(frozen=True)
class _MemoryCgroups:
    """A cgroup directory under which each sandbox gets a child with a memory limit.

    The limit counts what the kernel charges to the cgroup: the pages of every process of the
    sandbox, and those of files in its tmpfs and of shared memory, which ``RLIMIT_AS`` does not
    see. ``version`` 2 writes ``memory.max`` (and ``memory.swap.max`` = 0), version 1
    ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes``).
    """

    version: int
    parent: Path

    @property
    def mode(self) -> str:
        return f"cgroup-v{self.version}"

    def create(self, limit_bytes: int) -> Path:
        # (random too: processes in other PID namespaces may share the pid and the parent)
        path = self.parent / f"{_CGROUP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
        path.mkdir(mode=0o755)
        try:
            if self.version == 2:
                (path / "memory.max").write_text(str(limit_bytes))
                extras = {"memory.swap.max": "0"}
            else:
                (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
                extras = {"memory.memsw.limit_in_bytes": str(limit_bytes)}  # no escape into swap
            for name, value in extras.items():
                if (path / name).exists():
                    (path / name).write_text(value)
        except OSError:
            self.remove(path)
            raise
        return path

    def oom_kills(self, path: Path) -> int:
        """Processes the kernel killed in ``path`` for going over its limit."""
        try:
            text = (path / ("memory.events" if self.version == 2 else "memory.oom_control")).read_text()
        except OSError:
            return 0
        found = re.search(r"^oom_kill (\d+)$", text, re.MULTILINE)
        return int(found.group(1)) if found else 0

    def remove(self, path: Path, patience_s: float = 2.0) -> None:
        deadline = time.monotonic() + patience_s
        while True:
            try:
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # its last processes are still exiting
                if time.monotonic() > deadline:
                    _leftover_cgroups.add(path)
                    return
                time.sleep(0.01)


_leftover_cgroups: set[Path] = set()  # still busy when their sandbox ended: removed at exit


def _remove_leftover_cgroups(owner: int) -> None:
    if os.getpid() == owner:  # not from a forked child that exits normally
        for path in list(_leftover_cgroups):
            with contextlib.suppress(OSError):
                path.rmdir()


atexit.register(_remove_leftover_cgroups, os.getpid())


def _cgroup_mounts() -> list[tuple[str, str, str, str]]:
    """``(mount point, root, fs type, super options)`` of every cgroup file system mounted here."""
    mounts = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if "-" not in fields:
                continue
            tail = fields[fields.index("-") + 1 :]
            if tail and tail[0] in ("cgroup", "cgroup2"):
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
                mounts.append((point, fields[3], tail[0], tail[2] if len(tail) > 2 else ""))
    return mounts


def _own_cgroup_dirs() -> list[_MemoryCgroups]:
    """This process's own cgroup in a hierarchy with the memory controller, as candidates:
    version 2 where ``memory`` is already enabled for its children (a delegated cgroup, or the
    root of the hierarchy), version 1's memory hierarchy (where any cgroup may have children)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    found = []
    for point, root, fstype, options in _cgroup_mounts():
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if fstype == "cgroup2" and controllers == "":
                version = 2
            elif fstype == "cgroup" and "memory" in controllers.split(",") and "memory" in options.split(","):
                version = 1
            else:
                continue
            if root != "/" and not (path == root or path.startswith(root.rstrip("/") + "/")):
                continue
            directory = Path(point) / path[len(root.rstrip("/")) :].lstrip("/")
            if version == 2:
                try:
                    enabled = (directory / "cgroup.subtree_control").read_text().split()
                except OSError:
                    continue
                if "memory" not in enabled:
                    continue
            if directory.is_dir():
                found.append(_MemoryCgroups(version, directory))
    return found


def _find_memory_cgroups() -> tuple[_MemoryCgroups | None, str]:
    """Where sandboxes get their memory cgroups, or None and why not.

    ``$SKPO_SANDBOX_CGROUP`` names a cgroup directory to use (one delegated to this user, with
    ``memory`` in its ``cgroup.subtree_control`` on version 2); ``none`` turns cgroups off.
    Otherwise this process's own cgroup, where a child with a memory limit can be made.
    """
    chosen = os.environ.get("SKPO_SANDBOX_CGROUP", "").strip()
    if chosen.lower() in ("none", "off", "0"):
        return None, "turned off ($SKPO_SANDBOX_CGROUP=none)"
    if chosen:
        directory = Path(chosen)
        version = 2 if (directory / "cgroup.controllers").is_file() else 1
        candidates = [_MemoryCgroups(version, directory)]
    else:
        candidates = _own_cgroup_dirs()
    problems = []
    for groups in candidates:
        try:
            _clear_stale(groups)
            groups.remove(groups.create(256 * 2**20))  # a child with a limit can be made here
            return groups, ""
        except OSError as exc:
            problems.append(f"{groups.parent}: {exc}")
    if not candidates:
        return None, "no cgroup with the memory controller that this process may divide"
    return None, "; ".join(problems)


def _clear_stale(groups: _MemoryCgroups, age_s: float = 600.0) -> None:
    """Remove sandbox cgroups left behind by host processes that died: those empty (a cgroup
    with a process cannot be removed) and older than ``age_s`` (a live sandbox's is empty only
    for the moments between its creation and the move into it). By age, not by the pid in the
    name: a process in another PID namespace would see a live one's pid as gone."""
    now = time.time()
    for path in groups.parent.glob(f"{_CGROUP_PREFIX}*"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > age_s:
                path.rmdir()


@dataclass
class _Setup:
    mode: str  # "exclusive-uid", "nobody" or "user-namespace"
    python: str
    identities: _IdentityPool | None
    memory: _MemoryCgroups | None = None  # None: RLIMIT_AS only
    memory_note: str = ""  # why no cgroup, when there is none


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


_PROBE = (
    "import os, subprocess, sys\n"
    "subprocess.run([sys.executable, '-I', '-c', 'import json, math'], check=True)\n"
    "print(os.getuid(), os.geteuid(), os.getgid(), os.getegid(), len(os.getgroups()))\n"
)


def _probe(python: str, identity: _Identity, memory: _MemoryCgroups | None) -> bool:
    """Whether ``python`` runs a program that imports and starts a subprocess, really as
    ``identity``. Raises :class:`SandboxSetupError` when the sandbox itself cannot be built."""
    result = _run(python, _PROBE, "", None, "", SandboxLimits(timeout_s=30.0), identity, memory)
    if not result.finished:
        return False
    if identity.uid is None:
        return True
    expected = f"{identity.uid} {identity.uid} {identity.gid} {identity.gid} 0"
    return result.stdout.strip() == expected


def _first_working(candidates: list[str], identity: _Identity, errors: list[str],
                   memory: _MemoryCgroups | None) -> str | None:
    for python in candidates:
        try:
            if _probe(python, identity, memory):
                return python
            errors.append(f"{python} as uid {identity.uid}: the probe program failed")
        except (SandboxSetupError, OSError) as exc:
            errors.append(f"{python} as uid {identity.uid}: {exc}")
    return None


def _get_setup() -> _Setup:
    """Decide once how sandboxes run here: which identity scheme, which interpreter, and
    whether each sandbox gets a memory cgroup.

    An interpreter must be usable by the sandbox uid after the switch; the sandbox's root holds
    that interpreter's installation (read-only), so one under a private home directory works
    too. ``$SKPO_SANDBOX_PYTHON`` puts an interpreter first. Where sandboxes with a memory
    cgroup fail and ones without do not, cgroups are left out (:func:`sandbox_memory_mode`).
    """
    global _setup
    with _setup_lock:
        if _setup is not None:
            return _setup
        candidates = _interpreter_candidates()
        errors: list[str] = []
        memory, memory_note = _find_memory_cgroups()

        def first_working(identity: _Identity) -> str | None:
            nonlocal memory, memory_note
            python = _first_working(candidates, identity, errors, memory)
            if python is None and memory is not None:  # perhaps joining the cgroup is what failed
                failed = errors[-1]
                python = _first_working(candidates, identity, errors, None)
                if python is not None:
                    memory_note = f"sandboxes could not use {memory.parent} ({failed})"
                    memory = None
            return python

        if os.geteuid() == 0:
            base = int(os.environ.get("SKPO_SANDBOX_UID_BASE", DEFAULT_UID_BASE))
            slots = int(os.environ.get("SKPO_SANDBOX_SLOTS", DEFAULT_SLOTS))
            identities = _IdentityPool(base, slots)
            with identities.acquire() as identity:
                python = first_working(identity)
            if python is not None:
                _setup = _Setup("exclusive-uid", python, identities, memory, memory_note)
                return _setup
            python = first_working(_Identity(NOBODY, NOBODY, exclusive=False))
            if python is not None:
                _setup = _Setup("nobody", python, None, memory, memory_note)
                return _setup
            raise RuntimeError("cannot build the code sandbox as root:\n  " + "\n  ".join(errors))
        python = first_working(_Identity(None, None, exclusive=False))
        if python is not None:
            _setup = _Setup("user-namespace", python, None, memory, memory_note)
            return _setup
        raise RuntimeError(
            "cannot build the code sandbox without root: it needs unprivileged user namespaces "
            "(sysctl user.max_user_namespaces > 0; on Debian/Ubuntu kernel.unprivileged_userns_clone=1 "
            "and, with AppArmor, kernel.apparmor_restrict_unprivileged_userns=0), and it will not run "
            "untrusted code unisolated. Run as root, or allow user namespaces.\n  " + "\n  ".join(errors)
        )


def sandbox_memory_mode() -> str:
    """What caps a sandbox's memory on this machine: ``"cgroup-v2"`` or ``"cgroup-v1"`` (each
    sandbox in a memory cgroup of its own, limited to ``memory_mb`` plus
    :data:`JUDGE_ALLOWANCE_MB`, which counts its tmpfs files and shared memory too, on top of
    ``RLIMIT_AS`` per process) or ``"rlimit"`` (``RLIMIT_AS`` per process only; the reason is in
    :func:`sandbox_memory_note`)."""
    setup = _get_setup()
    return setup.memory.mode if setup.memory is not None else "rlimit"


def sandbox_memory_note() -> str:
    """Where sandboxes get their memory cgroups, or why they get none."""
    setup = _get_setup()
    return str(setup.memory.parent) if setup.memory is not None else setup.memory_note


def sandbox_identity_mode() -> str:
    """How sandboxes run on this machine: ``"exclusive-uid"`` (root: one private uid per
    sandbox), ``"nobody"`` (root, but the uid range could not be used: shared uid 65534,
    shared process cap), or ``"user-namespace"`` (not root: an unprivileged user namespace
    with a read-only view of the file system). Raises ``RuntimeError`` when none works."""
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


def _minimal_env() -> dict[str, str]:
    # HOME and TMPDIR are added inside, once the scratch directory exists.
    return {
        "PATH": _SAFE_PATH,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        # Each thread counts against the process limit: keep numeric libraries single-threaded.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _read_capped(path: Path, limit: int) -> str:
    """The first ``limit`` bytes of a file, decoded, with a note of what was left out."""
    with path.open("rb") as handle:
        head = handle.read(limit)
        size = handle.seek(0, os.SEEK_END)
    text = head.decode("utf-8", errors="replace")
    if size > limit:
        text += f"\n[... {size - limit} more bytes not read]"
    return text


_NO_REPORT = ["report", None, None, None, 0, None]


def _read_report(fd: int) -> list:
    """The judge's report ``["report", outcome, [exception name, message] | None, program
    status, leftovers, pid namespace]``, or ``["setup_error", message]``. A killed judge
    leaves none: then every field is ``None`` (leftovers 0)."""
    data = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 2.0)  # writers are gone or going: EOF soon
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    try:
        report: Any = _child.loads(data)  # (its shape is checked below)
    except _child.ProtocolError:
        return list(_NO_REPORT)
    if report and report[0] == "setup_error" and len(report) == 2:
        return report
    if len(report) != 6 or report[0] != "report":
        return list(_NO_REPORT)
    return report


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

    The PID namespace already takes every sandbox process down with its judge; this sweep
    is the safety net (it also runs before a uid is reused). Zombies still count against
    the uid's process limit, so they are waited for briefly.
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


def _signal_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []


def _kill_sandbox(process: subprocess.Popen, patience_s: float = 5.0) -> None:
    """Kill a sandbox that is still running and return once nothing of it is left.

    SIGTERM asks the outer process to kill the judge, pid 1 of the sandbox's PID namespace
    (its death takes every process of the namespace with it, and the kernel completes it only
    once they are gone), to reap it, and to exit, which this process reaps. So every judge is
    reaped by skpo itself, whatever runs above it: a judge killed together with the outer
    process would be handed to the nearest reaper above, and where that one never waits (a
    container's pid 1 without an init) it would stay a zombie of the sandbox uid, counting
    against that uid's process limit. Only an outer process that does not answer has its
    whole process group killed.
    """
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        _wait(process, patience_s)
        return
    except subprocess.TimeoutExpired:
        pass
    judges = []
    for pid in _children(process.pid):
        try:
            judges.append(os.pidfd_open(pid))
        except (AttributeError, OSError):
            pass
    _signal_group(process.pid)  # not reaped yet: the group id cannot be reused
    process.wait()
    for pidfd in judges:
        select.select([pidfd], [], [], 10.0)
        os.close(pidfd)


def _wait(process: subprocess.Popen, timeout_s: float) -> None:
    """``process.wait(timeout_s)`` without its polling (sleeps that double up to 50 ms)."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        process.wait(timeout=timeout_s)
        return
    try:
        if not select.select([pidfd], [], [], timeout_s)[0]:
            raise subprocess.TimeoutExpired(process.args, timeout_s)
        process.wait()
    finally:
        os.close(pidfd)


_COMPILE = "import py_compile, sys; py_compile.compile(sys.argv[1], sys.argv[2], doraise=True)"


def _remove_if_mine(directory: str, creator: int) -> None:
    if os.getpid() == creator:  # not from a forked child that exits normally
        shutil.rmtree(directory, ignore_errors=True)


_compiled: dict[str, str] = {}
_compiled_lock = threading.Lock()


def _compiled_child(python: str) -> str:
    """The sandbox's own code, byte-compiled once by ``python`` into a private directory.

    Compiling the ~700 lines on every start (``python -c``) would cost about as much CPU as
    the interpreter's own start-up.
    """
    with _compiled_lock:
        # Checked every time: a /tmp cleaner may remove it during a long run.
        if python not in _compiled or not os.path.isfile(_compiled[python]):
            directory = tempfile.mkdtemp(prefix="skpo-sandbox-code-")  # 0700, this user's
            atexit.register(_remove_if_mine, directory, os.getpid())
            target = os.path.join(directory, "sandbox_child.pyc")
            subprocess.run(
                [python, "-I", "-c", _COMPILE, str(_CHILD), target],
                check=True,
                capture_output=True,
                env=_minimal_env(),
            )
            _compiled[python] = target
        return _compiled[python]


def _hidden_paths() -> list[str]:
    """Paths the sandbox must never see even where they lie inside the Python installation it
    is given (a virtualenv made in the project's folder itself): the benchmark data and the
    home directory."""
    paths = [str(REPO_ROOT / "data"), os.environ.get("SKPO_BENCHMARK_DIR", ""), os.path.expanduser("~")]
    return [p for p in paths if p and os.path.isabs(p)]


def _frame(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _run(
    python: str,
    program: str,
    tests: str,
    entry_point: str | None,
    prelude: str,
    limits: SandboxLimits,
    identity: _Identity,
    memory: _MemoryCgroups | None = None,
) -> SandboxResult:
    """Run ``program`` in a fresh sandbox (in a memory cgroup of its own under ``memory``) and,
    in its judge, ``prelude`` + ``tests`` (+ ``check(entry_point)``). Raises
    :class:`SandboxSetupError` if the sandbox cannot be built."""
    cgroup = None
    if memory is not None:
        try:
            cgroup = memory.create((limits.memory_mb + JUDGE_ALLOWANCE_MB) * 2**20)
        except OSError as exc:
            raise SandboxSetupError(f"making a memory cgroup under {memory.parent}: {exc}") from None
    capture = tempfile.mkdtemp(prefix="skpo-sandbox-out-")  # host-only: 0700
    report_r, report_w = os.pipe()
    config = [
        int(identity.uid is None),  # user namespace
        -1 if identity.uid is None else identity.uid,
        -1 if identity.gid is None else identity.gid,
        limits.max_file_mb,  # size of each private tmpfs
        limits.memory_mb * 2**20,
        int(limits.timeout_s) + 1,  # CPU seconds
        limits.max_processes,
        limits.max_file_mb * 2**20,
        limits.max_open_files,
        report_w,
    ]
    # The program goes first; the tests follow and are read by the judge only after the
    # program process exists and has let go of stdin.
    job = _child.dumps([tests, entry_point, prelude])
    payload = _frame(program.encode("utf-8", errors="surrogatepass")) + _frame(job)
    try:
        stdout_path, stderr_path = Path(capture, "stdout"), Path(capture, "stderr")
        argv = [python, "-I", "-B", _compiled_child(python), *map(str, config), str(cgroup or "-"), *_hidden_paths()]
        started = time.monotonic()
        with open(os.open(stdout_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out, open(
            os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb"
        ) as err:
            process = subprocess.Popen(
                argv,
                cwd="/",
                env=_minimal_env(),
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
                pass_fds=(report_w,),
            )
        os.close(report_w)
        report_w = -1
        try:
            if cgroup is not None:
                # Moved in while its interpreter starts, before it has the program (it reads
                # that first), so the judge and the program are born inside the cgroup.
                try:
                    (cgroup / "cgroup.procs").write_text(str(process.pid))
                except OSError as exc:
                    raise SandboxSetupError(f"moving the sandbox into the memory cgroup {cgroup}: {exc}") from None
            assert process.stdin is not None
            try:
                process.stdin.write(payload)
                process.stdin.close()
            except BrokenPipeError:
                pass
            timed_out = False
            try:
                _wait(process, max(0.0, limits.timeout_s - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                timed_out = True
        finally:
            if process.poll() is None:
                _kill_sandbox(process)
        seconds = time.monotonic() - started
        report = _read_report(report_r)
        if report[0] == "setup_error":
            raise SandboxSetupError(str(report[1]))
        _, outcome, exception, status, leftovers, pid_namespace = report
        if identity.exclusive and identity.uid is not None and outcome is None:
            # Without a report the judge was killed (timeout) and its namespace may still be
            # dying; with one, the judge had already killed and reaped everything in it.
            leftovers += _kill_all_of(identity.uid)
        return SandboxResult(
            returncode=status if isinstance(status, int) else process.returncode,
            stdout=_read_capped(stdout_path, limits.max_output_bytes),
            stderr=_read_capped(stderr_path, limits.max_output_bytes),
            timed_out=timed_out,
            finished=outcome == "passed" and not timed_out,
            seconds=seconds,
            uid=identity.uid,
            leftover_killed=leftovers,
            exception=(exception[0], exception[1]) if exception else None,
            pid_namespace=pid_namespace,
            oom_killed=memory is not None and cgroup is not None and memory.oom_kills(cgroup) > 0,
        )
    finally:
        os.close(report_r)
        if report_w >= 0:
            os.close(report_w)
        shutil.rmtree(capture, ignore_errors=True)
        if cgroup is not None:
            memory.remove(cgroup)  # type: ignore[union-attr]


def _run_judged(
    program: str, tests: str, entry_point: str | None, prelude: str, limits: SandboxLimits
) -> SandboxResult:
    with _identity() as (identity, python):
        return _run(python, program, tests, entry_point, prelude, limits, identity, _get_setup().memory)


def run_sandboxed(program: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run a Python program in the sandbox and report what happened (no tests, no verdict)."""
    return _run_judged(program, "", None, "", limits or SandboxLimits())


# ------------------------------------------------------------------------------------------
# Turning a run into a verdict.
# ------------------------------------------------------------------------------------------


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _explain(result: SandboxResult, limits: SandboxLimits) -> str:
    if result.finished:
        return "passed"
    if result.oom_killed:
        return "killed: memory limit (cgroup)"
    if result.timed_out:
        return f"timeout after {limits.timeout_s:.1f}s"
    code = result.returncode
    if result.exception is not None:
        name, message = result.exception
        if name == "MemoryError":
            return "killed: memory limit (MemoryError)"
        if name == "BlockingIOError" and f"[Errno {errno.EAGAIN}]" in message:
            return "process limit reached (fork failed)"
        if name == "OSError" and "File too large" in message:
            return "file size limit exceeded"
        if name == "OSError" and f"[Errno {errno.EROFS}]" in message:
            return "error: read-only file system"
        if name == "SystemExit":
            return "exited before tests finished (SystemExit)"
        if name == "AssertionError":
            return "test failed: AssertionError"
        if name in ("SyntaxError", "IndentationError", "TabError"):
            return f"syntax error: {name}"
        return f"error: {name}"
    if code < 0:
        if -code == signal.SIGXCPU:
            return "killed: cpu time limit"
        if -code == signal.SIGXFSZ:
            return "killed: file size limit"
        return f"killed: {_signal_name(-code)}"
    if code == 0:
        return "exited before tests finished"
    return f"error: exit status {code}"


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
    *,
    trusted_prelude: str = "",
    **limits: Any,
) -> Verdict:
    """Run ``code`` in the sandbox, then ``tests`` (then ``check(entry_point)`` if given)
    in its judge, against the program.

    The tests see the program's module-level names (functions, classes, data) but run in
    another process: calls go to the program and results come back as plain data, so only
    correct answers pass. ``trusted_prelude`` is code run in the judge before the tests, whose
    names win over the program's (except ``entry_point``): HumanEval's prompt, so that its
    helpers (``poly``, ``encode_cyclic``) cannot be redefined by the completion.

    Reward 1 only when every test passed; otherwise 0 with a reason such as
    ``"test failed: AssertionError"``, ``"timeout after 5.0s"``,
    ``"killed: memory limit (MemoryError)"``, ``"process limit reached (fork failed)"``
    or ``"error: NameError"``. Extra keyword arguments go to :class:`SandboxLimits`.
    """
    sandbox_limits = SandboxLimits(timeout_s=timeout_s, memory_mb=memory_mb, max_processes=max_processes, **limits)
    result = _run_judged(code, tests, entry_point or None, trusted_prelude, sandbox_limits)
    return _verdict(result, sandbox_limits)


def run_python_batch(
    jobs: Sequence[tuple[str, str, str | None] | tuple[str, str, str | None, str]],
    max_workers: int = 4,
    **options: Any,
) -> list[Verdict]:
    """:func:`run_python_sandboxed` for many ``(code, tests, entry_point)`` jobs (a fourth
    item, if present, is the trusted prelude), several sandboxes at a time (threads; each
    sandbox is its own processes). Order is kept."""
    if not jobs:
        return []

    def one(job: tuple) -> Verdict:
        prelude = job[3] if len(job) > 3 else ""
        return run_python_sandboxed(job[0], job[1], job[2], trusted_prelude=prelude, **options)

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(jobs)))) as executor:
        return list(executor.map(one, jobs))


# ------------------------------------------------------------------------------------------
# HumanEval.
# ------------------------------------------------------------------------------------------


def humaneval_program(completion: str, problem_row: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(code, tests, entry_point)`` of a HumanEval row: prompt + completion, the row's
    ``test`` (which defines ``check``), and the function name to pass to it."""
    code = f"{problem_row['prompt']}{completion}"
    return code, str(problem_row["test"]), str(problem_row["entry_point"])


def verify_humaneval(completion: str, problem_row: Mapping[str, Any], **options: Any) -> Verdict:
    """Score a HumanEval completion (the function body that follows the row's prompt).

    The prompt also runs in the judge as trusted code, so the tests use the dataset's own
    helper functions, not ones the completion redefined."""
    return run_python_sandboxed(
        *humaneval_program(completion, problem_row), trusted_prelude=str(problem_row["prompt"]), **options
    )


def verify_humaneval_batch(
    completions: Sequence[str],
    problem_rows: Sequence[Mapping[str, Any]],
    max_workers: int = 4,
    **options: Any,
) -> list[Verdict]:
    """:func:`verify_humaneval` for aligned lists of completions and rows."""
    if len(completions) != len(problem_rows):
        raise ValueError(f"{len(completions)} completions but {len(problem_rows)} problem rows")
    jobs = [(*humaneval_program(c, row), str(row["prompt"])) for c, row in zip(completions, problem_rows)]
    return run_python_batch(jobs, max_workers=max_workers, **options)
