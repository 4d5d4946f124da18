"""Isolation of the code sandbox beyond limits and permissions (``skpo.rewards.code``).

Each test is a probe that once got through: uids shared between two host processes (one's
clean-up killed the other's program), a connection to the host's loopback, SysV shared
memory that outlived the sandbox, and a wrong program that printed a "finished" token it
found in its own memory and scored 1. They run whoever runs the suite: as root (exclusive
uids) and as any other user (unprivileged user namespace); a machine where the sandbox
cannot be built fails them loudly instead of skipping.
"""

from __future__ import annotations

import ast
import errno
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from skpo.paths import REPO_ROOT, benchmark_dir
from skpo.rewards import code as sandbox
from skpo.rewards.base import Verdict
from skpo.rewards.code import run_python_batch, run_python_sandboxed, run_sandboxed, verify_humaneval

ADD_TESTS = "def check(f):\n    assert f(2, 3) == 5\n"
WRONG_ADD = "def add(a, b):\n    return a - b\n"


# ------------------------------------------------------------------------------------------
# 1. uids are exclusive across host processes.
# ------------------------------------------------------------------------------------------

_LONG_CORRECT = """
from skpo.rewards.code import run_python_sandboxed, sandbox_identity_mode
sandbox_identity_mode()
print("ready", flush=True)
code = "import time\\ntime.sleep(2.5)\\ndef add(a, b):\\n    return a + b\\n"
print(run_python_sandboxed(code, "def check(f):\\n    assert f(2, 3) == 5\\n", "add", timeout_s=30.0).reason)
"""

_MANY_SHORT = """
from skpo.rewards.code import run_sandboxed
results = [run_sandboxed("print('short')\\n") for _ in range(4)]
print(all(r.finished for r in results), *[r.uid for r in results])
"""


def test_two_host_processes_do_not_share_uids() -> None:
    # Before: both processes handed out the same uids in the same order, and the second
    # one's clean-up (kill every process of "its" uid) killed the first one's program.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    holder = subprocess.Popen([sys.executable, "-c", _LONG_CORRECT], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        time.sleep(0.3)  # its sandbox is running now, for another ~2 s
        churner = subprocess.run(
            [sys.executable, "-c", _MANY_SHORT], capture_output=True, text=True, env=env, timeout=60
        )
        assert churner.returncode == 0, churner.stderr
        assert churner.stdout.split()[0] == "True"
        out, _ = holder.communicate(timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert out.strip() == "passed"


def test_uid_slots_are_flocked_lock_files() -> None:
    # The mechanism behind the test above, as root: while a sandbox runs, its uid's lock
    # file is held, so another process cannot take that uid.
    if os.geteuid() != 0:
        assert sandbox.sandbox_identity_mode() == "user-namespace"  # no uids to share
        return
    import fcntl

    pool = sandbox._get_setup().identities
    assert pool is not None
    with pool.acquire() as identity:
        lock = pool._lock_dir / f"uid-{identity.uid}.lock"
        other = os.open(lock, os.O_RDWR)  # as another process would
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
        lock_dir = pool._lock_dir.stat()
        assert lock_dir.st_uid == 0 and not lock_dir.st_mode & 0o022  # no sandbox uid can write it


# ------------------------------------------------------------------------------------------
# 2. No network.
# ------------------------------------------------------------------------------------------


def test_no_network_not_even_the_hosts_loopback() -> None:
    abstract = f"\0skpo-test-{uuid.uuid4().hex}"
    with socket.socket() as listener, socket.socket(socket.AF_UNIX) as unix_listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        unix_listener.bind(abstract)
        unix_listener.listen()
        unix_listener.setblocking(False)
        port = listener.getsockname()[1]
        result = run_sandboxed(
            "import socket\n"
            "print(sorted(line.split(':')[0].strip() for line in open('/proc/net/dev').readlines()[2:]))\n"
            "def attempt(what, family, kind, address, send=False):\n"
            "    try:\n"
            "        s = socket.socket(family, kind)\n"
            "        s.settimeout(2.0)\n"
            "        s.sendto(b'x', address) if send else s.connect(address)\n"
            "        print(what, 'reached')\n"
            "    except OSError as exc:\n"
            "        print(what, 'blocked', exc.errno)\n"
            f"attempt('loopback', socket.AF_INET, socket.SOCK_STREAM, ('127.0.0.1', {port}))\n"
            "attempt('tcp-out', socket.AF_INET, socket.SOCK_STREAM, ('1.1.1.1', 443))\n"
            "attempt('udp-out', socket.AF_INET, socket.SOCK_DGRAM, ('8.8.8.8', 53), send=True)\n"
            f"attempt('abstract-unix', socket.AF_UNIX, socket.SOCK_STREAM, {abstract!r})\n"
        )
        assert result.finished, result.stderr
        assert result.stdout.splitlines() == [
            "['lo']",  # a loopback of its own (down), and nothing else
            f"loopback blocked {errno.EPERM}",  # no socket but AF_UNIX can even be made
            f"tcp-out blocked {errno.EPERM}",
            f"udp-out blocked {errno.EPERM}",
            f"abstract-unix blocked {errno.ECONNREFUSED}",  # abstract sockets are per namespace
        ]
        for server in (listener, unix_listener):
            with pytest.raises(BlockingIOError):  # nobody knocked
                server.accept()


# ------------------------------------------------------------------------------------------
# 3. SysV IPC dies with the sandbox.
# ------------------------------------------------------------------------------------------


def _sysv_keys(kind: str) -> set[int]:
    lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]
    return {int(line.split()[0]) for line in lines}


def test_sysv_ipc_objects_do_not_outlive_the_sandbox() -> None:
    key = secrets.randbelow(2**30) + 1
    program = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "IPC_CREAT = 0o1000\n"
        f"shm = libc.shmget({key}, 1 << 20, IPC_CREAT | 0o600)\n"
        "address = libc.shmat(shm, None, 0)\n"
        f"sem = libc.semget({key}, 1, IPC_CREAT | 0o600)\n"
        f"msg = libc.msgget({key}, IPC_CREAT | 0o600)\n"
        "print(shm >= 0, sem >= 0, msg >= 0)\n"
    )
    try:
        result = run_sandboxed(program)
        # semaphores and queues existed; SysV shared memory is refused outright (pages outside the
        # address-space limit: test_memory_outside_the_address_space_limit_is_refused)
        assert result.finished and result.stdout.split() == ["False", "True", "True"], result.stderr
        for kind in ("shm", "sem", "msg"):
            assert key not in _sysv_keys(kind), kind  # and are gone (or never were on the host)
    finally:  # on a sandbox that leaks them, do not leave them on the machine
        for flag in ("-M", "-S", "-Q"):
            subprocess.run(["ipcrm", flag, str(key)], capture_output=True)


# ------------------------------------------------------------------------------------------
# 4. The verdict cannot be forged.
# ------------------------------------------------------------------------------------------

# Every forger ends in `_leave`: write everything it found, the likeliest "finished" token
# last, to stdout, stderr and every other descriptor it holds, plus a forged judge report
# and forged replies, then exit with status 0. None of it may turn a wrong answer into 1.
_LEAVE = r'''
import os, re as _re, struct
def _leave(found, how=lambda: os._exit(0)):
    found = [f for f in found if isinstance(f, (str, bytes))]
    items = [(f.encode("utf-8", "replace") if isinstance(f, str) else bytes(f)).strip() for f in found]
    # The harness is open source: what looks like its old finish token goes last.
    token = _re.compile(rb"__skpo_sandbox_finished_[0-9a-f]{32}__")
    items.sort(key=lambda f: (bool(token.fullmatch(f)), b"finish" in f or b"token" in f, len(f)))
    forged = [b"l6:s6:reports6:passedNi1:0i1:0N", b"l1:s5:ready", b"l2:s2:okl2:s1:Bs1:T"]
    items = forged + [struct.pack(">I", len(f)) + f for f in forged] + items
    try:
        fds = sorted(int(n) for n in os.listdir("/proc/self/fd"))
    except OSError:
        fds = list(range(64))
    for fd in [fd for fd in fds if fd != 1] + [1]:
        for item in items:
            try:
                os.write(fd, b"\n" + item.strip() + b"\n")
            except OSError:
                pass
    how()
'''

FORGERS = {
    "frame walk from inside the function under test": '''
import sys
def add(a, b):
    found, frame = [], sys._getframe()
    while frame is not None:
        for scope in (frame.f_locals, frame.f_globals):
            found += [v for v in list(scope.values()) if isinstance(v, (str, bytes))]
        found += [c for c in frame.f_code.co_consts if isinstance(c, (str, bytes))]
        frame = frame.f_back
    _leave(found)
    return a - b
''',
    "frame walk at module level": '''
import sys
found, frame = [], sys._getframe()
while frame is not None:
    for scope in (frame.f_locals, frame.f_globals):
        found += [v for v in list(scope.values()) if isinstance(v, (str, bytes))]
    frame = frame.f_back
_leave(found)
def add(a, b):
    return a - b
''',
    "gc scan": '''
import gc
def add(a, b):
    found = []
    for obj in gc.get_objects():
        values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
        found += [v for v in list(values) if isinstance(v, (str, bytes))]
    _leave(found)
    return a - b
''',
    "memory scan through /proc/self/mem": '''
import re
def add(a, b):
    found = []
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r") or "[v" in line:
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                chunk = mem.read(min(end - start, 64 << 20))
            except OSError:
                continue
            found += re.findall(rb"__skpo_sandbox_finished_[0-9a-f]{32}__", chunk)
    _leave(found)
    return a - b
''',
    "reading /proc: own argv, environ, fds and the parent's": '''
import os
def add(a, b):
    found = []
    for path in ["/proc/self/cmdline", "/proc/self/environ", "/proc/1/cmdline", "/proc/1/environ",
                 f"/proc/{os.getppid()}/environ", "program.py"]:
        try:
            found += open(path, "rb").read().split(b"\0")
        except OSError:
            pass
    for directory in ("/proc/self/fd", "/proc/1/fd", f"/proc/{os.getppid()}/fd"):
        try:
            for name in os.listdir(directory):
                try:
                    fd = os.open(f"{directory}/{name}", os.O_RDWR | os.O_NONBLOCK)
                    found.append(os.read(fd, 1 << 16))
                except OSError:
                    pass
        except OSError:
            pass
    _leave(found)
    return a - b
''',
    "os._exit(0) while the tests run": '''
import os
def add(a, b):
    os._exit(0)
''',
    "SystemExit(0) while the tests run": '''
def add(a, b):
    raise SystemExit(0)
''',
    "StopIteration to cut a loop short": '''
def add(a, b):
    raise StopIteration
''',
    "leave at module level after printing": '''
print("passed")
_leave(["passed"], how=lambda: (_ for _ in ()).throw(SystemExit(0)))
def add(a, b):
    return a - b
''',
    "patched builtins and its own check": '''
import builtins
builtins.AssertionError = KeyError
builtins.isinstance = lambda *a: True
builtins.len = lambda x: 5
def check(f):
    pass
def add(a, b):
    return a - b
''',
    "an answer that equals everything": '''
class Yes:
    def __eq__(self, other):
        return True
    __hash__ = object.__hash__
    def __bool__(self):
        return True
def add(a, b):
    return Yes()
''',
    "a str and an int subclass that equal everything": '''
class S(str):
    def __eq__(self, other):
        return True
    __hash__ = str.__hash__
class I(int):
    def __eq__(self, other):
        return True
    __hash__ = int.__hash__
def add(a, b):
    return I(0) if a else S("")
''',
    "exit status 0 from an atexit hook after the failure": '''
import atexit, os, sys
atexit.register(lambda: (sys.stdout.write("passed\\n"), sys.stdout.flush(), os._exit(0)))
sys.excepthook = lambda *a: os._exit(0)
def add(a, b):
    return a - b
''',
    "a thread that keeps writing forged reports": '''
import threading
def spam():
    while True:
        _leave(["passed"], how=lambda: None)
threading.Thread(target=spam, daemon=True).start()
def add(a, b):
    import time
    time.sleep(0.2)
    return a - b
''',
    "signal, ptrace and kill the judge, then leave": '''
import ctypes, os, signal
libc = ctypes.CDLL(None, use_errno=True)
for pid in {1, os.getppid()}:
    libc.ptrace(16, pid, None, None)  # PTRACE_ATTACH
    for sig in (signal.SIGSTOP, signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except OSError:
            pass
def add(a, b):
    _leave([])
''',
}


@pytest.mark.parametrize("name", list(FORGERS))
def test_a_wrong_program_cannot_forge_a_pass(name: str) -> None:
    verdict = run_python_sandboxed(_LEAVE + FORGERS[name], ADD_TESTS, "add", timeout_s=10.0)
    assert verdict.reward == 0.0 and not verdict.correct, verdict.reason


def test_the_expected_answers_never_enter_the_program() -> None:
    # The tests' values live only in the judge: a program that searches every place it can
    # read for them finds nothing (before: they were in program.py, next to the code).
    marker = f"expected-{uuid.uuid4().hex}"
    tests = f"def check(f):\n    assert f() == {marker!r}\n"
    searcher = '''
import gc, os, re, sys
def answer():
    pattern = re.compile(rb"expected-[0-9a-f]{32}")
    blobs = []
    for path in ("program.py", "/proc/self/cmdline", "/proc/self/environ", "/proc/1/cmdline", "/proc/1/environ"):
        try:
            blobs.append(open(path, "rb").read())
        except OSError:
            pass
    blobs += [str(o).encode("utf-8", "replace") for o in gc.get_objects() if isinstance(o, (dict, list, tuple))]
    frame = sys._getframe()
    while frame is not None:
        blobs.append(repr(frame.f_locals).encode("utf-8", "replace"))
        frame = frame.f_back
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if perms.startswith("r") and "[v" not in line:
                start, end = (int(x, 16) for x in span.split("-"))
                try:
                    mem.seek(start)
                    blobs.append(mem.read(min(end - start, 64 << 20)))
                except OSError:
                    pass
    for blob in blobs:
        found = pattern.search(blob)
        if found:
            return found.group().decode()
    return "nothing found"
'''
    verdict = run_python_sandboxed(searcher, tests, "answer", timeout_s=10.0)
    assert verdict == Verdict(0.0, False, "test failed: AssertionError")


def test_correct_programs_pass_whatever_else_they_do() -> None:
    # The same tricks around a right answer: patched builtins, its own `check`, noise on
    # stdout/stderr, frame walking, threads. The judge only looks at the answers.
    correct = "def add(a, b):\n    return a + b\n"
    noisy = [
        "import builtins\nbuiltins.AssertionError = KeyError\nbuiltins.len = builtins.type = lambda x: 0\n" + correct,
        "def check(f):\n    raise SystemExit(1)\n" + correct,
        "import sys\nprint('x' * 5000)\n"
        "print('Traceback (most recent call last):\\nAssertionError', file=sys.stderr)\n" + correct,
        "import sys\ndef add(a, b):\n    f = sys._getframe()\n    while f.f_back: f = f.f_back\n    return a + b\n",
        "import threading, time\nthreading.Thread(target=lambda: time.sleep(30), daemon=True).start()\n" + correct,
        "class Point:\n    def __init__(self, x): self.x = x\n"
        "    def total(self, y): return self.x + y\n"
        "def add(a, b):\n    return Point(a).total(b)\n",
    ]
    verdicts = run_python_batch([(program, ADD_TESTS, "add") for program in noisy], max_workers=2)
    assert [v.reason for v in verdicts] == ["passed"] * len(noisy)


def test_tests_see_the_programs_objects_through_handles() -> None:
    # Objects of the program stay there; the tests call their methods and compare data.
    code = (
        "class Stack:\n"
        "    def __init__(self): self.items = []\n"
        "    def push(self, x): self.items.append(x)\n"
        "    def pop(self): return self.items.pop()\n"
        "LIMIT = {'depth': (3, 4.5), 'name': 'stack'}\n"
    )
    tests = (
        "s = Stack()\ns.push(1)\ns.push([2, {'a': (3, None)}])\n"
        "assert s.pop() == [2, {'a': (3, None)}] and s.pop() == 1\n"
        "assert LIMIT == {'depth': (3, 4.5), 'name': 'stack'} and type(LIMIT['depth']) is tuple\n"
        "assert s.items == []\n"
    )
    assert run_python_sandboxed(code, tests, None) == Verdict(1.0, True, "passed")
    # A handle has no truth value and equals only itself: `assert Stack()` is not a pass.
    assert run_python_sandboxed(code, "assert Stack()\n", None).reason == "error: TypeError"
    assert run_python_sandboxed(code, "assert Stack() == Stack()\n", None).reason == "test failed: AssertionError"


def test_humaneval_helpers_come_from_the_dataset() -> None:
    # HumanEval/32's check evaluates the answer with the prompt's own `poly`. A completion
    # that redefines `poly` to always return 0 used to pass with any answer.
    row = {
        "prompt": "import math\n\n\ndef poly(xs: list, x: float):\n"
        "    return sum(c * math.pow(x, i) for i, c in enumerate(xs))\n\n\n"
        "def find_zero(xs: list):\n    \"\"\"A zero of the polynomial xs.\"\"\"\n",
        "test": "def check(candidate):\n    for coeffs in ([1, 2], [-6, 11, -6, 1]):\n"
        "        assert math.fabs(poly(coeffs, candidate(coeffs))) < 1e-4\n",
        "entry_point": "find_zero",
    }
    cheat = "    return 0.0\n\n\ndef poly(xs, x):\n    return 0.0\n"
    assert verify_humaneval(cheat, row) == Verdict(0.0, False, "test failed: AssertionError")
    honest = (
        "    lo, hi = -10.0, 10.0\n    for _ in range(200):\n        mid = (lo + hi) / 2\n"
        "        if poly(xs, lo) * poly(xs, mid) <= 0:\n            hi = mid\n"
        "        else:\n            lo = mid\n    return lo\n"
    )
    assert verify_humaneval(honest, row) == Verdict(1.0, True, "passed")


# ------------------------------------------------------------------------------------------
# 12. Whoever runs it: no capabilities, a read-only world, and no silent fallback.
# ------------------------------------------------------------------------------------------


def test_sandbox_holds_no_privilege() -> None:
    result = run_sandboxed(
        "import ctypes\n"
        "status = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
        "print(*(status[k].strip() for k in ('CapEff', 'CapPrm', 'CapBnd', 'NoNewPrivs')))\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "MS_REMOUNT, MS_BIND = 32, 4096\n"
        "for target in (b'/', b'/proc', b'/tmp'):\n"
        "    print(libc.mount(None, target, None, MS_REMOUNT | MS_BIND, None), ctypes.get_errno())\n"
        "print(libc.unshare(0x00020000), ctypes.get_errno())\n"  # a mount namespace of its own
    )
    assert result.finished, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["0000000000000000"] * 3 + ["1"]
    assert lines[1:4] == [f"-1 {errno.EPERM}"] * 3  # cannot make anything writable again
    assert lines[4] == f"-1 {errno.EPERM}"


def test_only_harmless_devices_and_no_host_sockets() -> None:
    # No GPU (/dev/nvidia* are usually world-writable) and no way to the host's D-Bus or the
    # user's session bus: /run is the sandbox's own, like /tmp.
    result = run_sandboxed(
        "import os\n"
        "print(sorted(os.listdir('/dev')), os.listdir('/run'))\n"
        "open('/dev/null', 'w').write('x')\n"
        "open('/dev/shm/scratch', 'w').write('shared memory works')\n"
        "print(len(open('/dev/urandom', 'rb').read(16)), open('/dev/shm/scratch').read())\n"
    )
    assert result.finished, result.stderr
    assert result.stdout.splitlines() == [
        "['fd', 'full', 'null', 'random', 'shm', 'stderr', 'stdin', 'stdout', 'urandom', 'zero'] []",
        "16 shared memory works",
    ]


def test_no_namespaces_means_an_error_not_an_unisolated_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a kernel without unprivileged user namespaces looks like to the setup: every
    # sandbox start is refused. The answer must be a loud error, never a plain subprocess.
    def refused(*args: object, **kwargs: object) -> None:
        raise sandbox.SandboxSetupError("unshare(user, net, ipc, mount, pid): Operation not permitted (errno 1)")

    monkeypatch.setattr(sandbox, "_setup", None)
    monkeypatch.setattr(sandbox, "_run", refused)
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)
    with pytest.raises(RuntimeError, match=r"user namespaces.*will not run untrusted code unisolated"):
        sandbox.sandbox_identity_mode()
    with pytest.raises(RuntimeError, match="Operation not permitted"):
        run_python_sandboxed("def add(a, b):\n    return a + b\n", ADD_TESTS, "add")


def test_a_program_cannot_make_the_verdict_raise() -> None:
    # Everything after the program starts ends in a verdict: a failing test whose traceback
    # no longer fits in a stderr the program filled up, or a reply too large for the judge.
    filled = "import sys\nsys.stderr.write('e' * (1 << 20))\nsys.stderr.flush()\n" + WRONG_ADD
    assert run_python_sandboxed(filled, ADD_TESTS, "add", max_file_mb=1).reason == "test failed: AssertionError"
    huge = "def add(a, b):\n    return 'x' * (200 << 20)\n"
    assert run_python_sandboxed(huge, ADD_TESTS, "add", memory_mb=256).reason == "killed: memory limit (MemoryError)"


# ------------------------------------------------------------------------------------------
# Kernel keyrings and memory the address-space limit does not count.
# ------------------------------------------------------------------------------------------

_KEYRING_PROBE = """
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
KEY_SPEC_SESSION_KEYRING, KEY_SPEC_USER_KEYRING, KEYCTL_SEARCH, KEYCTL_READ = -3, -4, 10, 11
found = libc.syscall({keyctl}, KEYCTL_SEARCH, KEY_SPEC_SESSION_KEYRING, b"user", b"{description}", 0)
search = ctypes.get_errno()
added = libc.syscall({add_key}, b"user", b"left-by-the-sandbox", b"x", 1, KEY_SPEC_USER_KEYRING)
add = ctypes.get_errno()
print(found, search, added, add)
"""


def _syscall_numbers() -> dict[str, int]:
    from skpo.rewards._sandbox_child import BLOCKED_SYSCALLS

    return BLOCKED_SYSCALLS[os.uname().machine][1]


def test_keyrings_are_out_of_reach() -> None:
    """The host's session keyring (a secret put there by the test, where the host allows it)
    cannot be searched or read, and the sandbox cannot leave a key for a later sandbox of its uid
    or for the host: every keyring system call fails with EPERM."""
    import ctypes

    numbers = _syscall_numbers()
    libc = ctypes.CDLL(None, use_errno=True)
    description = f"skpo-test-{uuid.uuid4().hex}"
    secret = secrets.token_hex(8).encode()
    host_key = libc.syscall(numbers["add_key"], b"user", description.encode(), secret, len(secret), -3)
    try:
        result = run_sandboxed(_KEYRING_PROBE.format(keyctl=numbers["keyctl"], add_key=numbers["add_key"],
                                                     description=description))
        assert result.finished, result.stderr
        found, search_errno, added, add_errno = (int(v) for v in result.stdout.split())
        assert (found, search_errno, added, add_errno) == (-1, errno.EPERM, -1, errno.EPERM)
        assert secret.decode() not in result.stdout + result.stderr
    finally:
        if host_key > 0:
            libc.syscall(numbers["keyctl"], 21, host_key, 0, 0, 0)  # KEYCTL_INVALIDATE


def test_memory_outside_the_address_space_limit_is_refused() -> None:
    """memfd pages and SysV shared memory do not count against RLIMIT_AS: their system calls
    fail with EPERM. POSIX shared memory is a file on the sandbox's own /dev/shm tmpfs, capped at
    its size: writing past it fails (ENOSPC), so 55 × 15 MB cannot pile up on the host."""
    program = (
        "import ctypes, errno, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "try:\n    os.memfd_create('x')\n    memfd = 0\nexcept OSError as e:\n    memfd = e.errno\n"
        "shm = libc.shmget(0, 15 << 20, 0o1000 | 0o600)\nshm_errno = ctypes.get_errno()\n"
        "written, error = 0, 0\n"
        "try:\n"
        "    for i in range(55):\n"
        "        with open(f'/dev/shm/block{i}', 'wb') as f:\n"
        "            f.write(b'x' * (15 << 20))\n"
        "        written += 1\n"
        "except OSError as e:\n    error = e.errno\n"
        "print(memfd, shm, shm_errno, written, error)\n"
    )
    result = run_sandboxed(program, sandbox.SandboxLimits(max_file_mb=64))
    assert result.finished, result.stderr
    memfd, shm, shm_errno, written, error = (int(v) for v in result.stdout.split())
    assert (memfd, shm, shm_errno) == (errno.EPERM, -1, errno.EPERM)
    assert written <= 64 // 15 and error in (errno.ENOSPC, errno.EFBIG)



# ------------------------------------------------------------------------------------------
# No namespaces, no second system-call interface, no socket but AF_UNIX.
# ------------------------------------------------------------------------------------------

# The escape that once got through: a user namespace of its own, a tmpfs of any size there, and
# 100 files of 15 MB in it — 1.5 GB of the host's shared memory under memory_mb=256, "passed".
_TMPFS_ESCAPE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def check(result, what):
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")
uid, gid = os.getuid(), os.getgid()
check(libc.unshare(0x10000000 | 0x00020000), "unshare")  # CLONE_NEWUSER | CLONE_NEWNS
for name, line in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
    with open(f"/proc/self/{name}", "w") as handle:
        handle.write(line)
os.mkdir("big")
check(libc.mount(b"tmpfs", b"big", b"tmpfs", 0, b"size=0"), "mount")
for i in range(100):
    with open(f"big/{i}", "wb") as handle:
        handle.write(b"x" * (15 << 20))
"""


def test_the_tmpfs_escape_is_closed() -> None:
    verdict = run_python_sandboxed(_TMPFS_ESCAPE, "", None, memory_mb=256, timeout_s=5.0)
    assert verdict == Verdict(0.0, False, "error: PermissionError")  # unshare: EPERM, nothing mounted


_KERNEL_PROBE = """
import ctypes, os, socket, subprocess, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
def call(number, *args):
    result = libc.syscall(number, *args)
    if result == 0 and number == {clone}:  # a child that should never exist
        os._exit(0)
    return result, ctypes.get_errno()
class CloneArgs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack",
                                              "stack_size", "tls", "set_tid", "set_tid_size", "cgroup")]
args = CloneArgs(flags=0x10000000, exit_signal=17)  # CLONE_NEWUSER
params = ctypes.create_string_buffer(120)
print("io_uring_setup", *call({io_uring_setup}, 8, params))
print("clone3", *call({clone3}, ctypes.byref(args), ctypes.sizeof(args)))
print("clone", *call({clone}, 0x10000000 | 17, 0, 0, 0, 0))  # CLONE_NEWUSER | SIGCHLD
print("setns", *call({setns}, os.open("/proc/self/ns/net", os.O_RDONLY), 0))
print("fsopen", *call({fsopen}, b"tmpfs", 0))
for family in ("AF_VSOCK", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"):
    try:
        socket.socket(getattr(socket, family), socket.SOCK_RAW if family == "AF_PACKET" else socket.SOCK_DGRAM)
        print(family, "made")
    except OSError as exc:
        print(family, exc.errno)
# what programs use keeps working: Unix sockets, threads (clone3 falls back to clone), fork, exec
a, b = socket.socketpair()
a.sendall(b"unix")
threading.Thread(target=lambda: None).start()
pid = os.fork()
if pid == 0:
    os._exit(7)
print(b.recv(4).decode(), os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]),
      subprocess.run([sys.executable, "-c", "print('exec')"], capture_output=True, text=True).stdout.strip())
"""


def test_namespaces_io_uring_and_sockets_but_unix_are_refused() -> None:
    from skpo.rewards._sandbox_child import BLOCKED_SYSCALLS, CHECKED_SYSCALLS

    numbers = {**BLOCKED_SYSCALLS[os.uname().machine][1], **CHECKED_SYSCALLS[os.uname().machine]}
    result = run_sandboxed(_KERNEL_PROBE.format(**numbers))
    assert result.finished, result.stderr
    assert result.stdout.splitlines() == [
        f"io_uring_setup -1 {errno.EPERM}",
        f"clone3 -1 {errno.ENOSYS}",  # (its flags are out of the filter's sight: the C library falls back to clone)
        f"clone -1 {errno.EPERM}",
        f"setns -1 {errno.EPERM}",
        f"fsopen -1 {errno.EPERM}",
        *[f"{family} {errno.EPERM}" for family in ("AF_VSOCK", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET")],
        "unix 7 exec",
    ]


def test_memory_made_without_mmap_counts_against_the_cap() -> None:
    """Files on the sandbox's tmpfs are memory that RLIMIT_AS does not see. Where each sandbox
    has a memory cgroup (``sandbox_memory_mode()``), they count against it: 200 MB of files under
    memory_mb=64 end the run. Elsewhere only the tmpfs size bounds them (the documented fallback)."""
    program = (
        "for i in range(20):\n"
        "    with open(f'/dev/shm/block{i}', 'wb') as f:\n"
        "        f.write(b'x' * (10 << 20))\n"
        "print('wrote 200 MB')\n"
    )
    verdict = run_python_sandboxed(program, "", None, memory_mb=64, max_file_mb=256, timeout_s=10.0)
    if sandbox.sandbox_memory_mode() == "rlimit":
        assert verdict == Verdict(1.0, True, "passed")
    else:
        assert sandbox.sandbox_memory_mode() in ("cgroup-v1", "cgroup-v2")
        assert verdict == Verdict(0.0, False, "killed: memory limit (cgroup)")
        assert not list(Path(sandbox.sandbox_memory_note()).glob(f"skpo-sandbox-{os.getpid()}-*"))  # removed after


def test_without_a_memory_cgroup_the_rlimit_caps_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "_setup", None)
    monkeypatch.setenv("SKPO_SANDBOX_CGROUP", "none")
    try:
        assert sandbox.sandbox_memory_mode() == "rlimit"
        assert "SKPO_SANDBOX_CGROUP=none" in sandbox.sandbox_memory_note()
        huge = "def add(a, b):\n    return len(bytearray(1 << 30))\n"  # still bounded per process
        assert run_python_sandboxed(huge, ADD_TESTS, "add", memory_mb=256).reason == "killed: memory limit (MemoryError)"
    finally:
        sandbox._setup = None  # the next test decides again, with the machine's cgroups


# ------------------------------------------------------------------------------------------
# What a program can read: the Python runtime, its scratch directory, nothing else.
# ------------------------------------------------------------------------------------------

SYSTEM_ENTRIES = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "proc", "dev", "tmp", "var", "run"}


def test_the_sandbox_sees_only_the_python_runtime() -> None:
    run_dir = REPO_ROOT / "runs" / f"skpo-test-{uuid.uuid4().hex}"
    home_file = Path.home() / f".skpo-test-{uuid.uuid4().hex}"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    home_file.write_text("secret\n")
    paths = [run_dir / "metrics.jsonl", home_file, benchmark_dir() / "humaneval.jsonl.gz", REPO_ROOT / "pyproject.toml",
             REPO_ROOT / "src" / "skpo" / "rewards" / "code.py"]
    try:
        assert all(p.is_file() for p in paths)
        result = run_sandboxed(
            "import os, sys\n"
            f"for path in {[str(p) for p in paths]!r}:\n"
            "    print(os.path.exists(path))\n"
            "print(sorted(os.listdir('/')))\n"
            f"print(sorted(os.listdir({str(REPO_ROOT)!r})) if os.path.isdir({str(REPO_ROOT)!r}) else None)\n"
            "print(sys.prefix, sys.base_prefix, os.path.realpath(sys.executable))\n"
        )
        assert result.finished, result.stderr
        lines = result.stdout.splitlines()
        assert lines[: len(paths)] == ["False"] * len(paths)
        runtime = lines[len(paths) + 2].split()
        tops = {Path(p).parts[1] for p in runtime if len(Path(p).parts) > 1}
        assert set(ast.literal_eval(lines[len(paths)])) <= SYSTEM_ENTRIES | tops
        # the repository's folder is there only on the way to a virtualenv made in it
        assert lines[len(paths) + 1] in ("None", "['.venv']")
    finally:
        shutil.rmtree(run_dir)
        home_file.unlink()


def test_the_humaneval_canonical_solution_cannot_be_looked_up() -> None:
    """A wrong completion that loads the dataset's canonical solution and runs it would score 1
    where the sandbox could read the benchmark file."""
    import gzip
    import json

    benchmark = benchmark_dir() / "humaneval.jsonl.gz"
    with gzip.open(benchmark, "rt", encoding="utf-8") as handle:
        row = json.loads(handle.readline())
    lookup = (
        "    import gzip, json\n"
        f"    with gzip.open({str(benchmark)!r}, 'rt') as handle:\n"
        "        for line in handle:\n"
        "            found = json.loads(line)\n"
        f"            if found['entry_point'] == {row['entry_point']!r}:\n"
        "                scope = {}\n"
        "                exec(found['prompt'] + found['canonical_solution'], scope)\n"
        f"                return scope[{row['entry_point']!r}]({', '.join(_arguments(row['prompt'], row['entry_point']))})\n"
    )
    assert verify_humaneval(row["canonical_solution"], row) == Verdict(1.0, True, "passed")  # the row is sound
    assert verify_humaneval(lookup, row) == Verdict(0.0, False, "error: FileNotFoundError")


def _arguments(prompt: str, entry_point: str) -> list[str]:
    tree = ast.parse(prompt)
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry_point)
    return [a.arg for a in function.args.args]


# ------------------------------------------------------------------------------------------
# Judges are reaped by skpo itself, whatever runs above it.
# ------------------------------------------------------------------------------------------

_TIMEOUTS_THEN_A_PASS = f"""
import os, sys
from skpo.rewards.code import run_python_sandboxed
timeouts, processes = int(sys.argv[1]), int(sys.argv[2])
reasons = {{run_python_sandboxed("while True:\\n    pass\\n", "", None, timeout_s=0.2, max_processes=processes).reason
           for _ in range(timeouts)}}
passed = run_python_sandboxed("def add(a, b):\\n    return a + b\\n", {ADD_TESTS!r}, "add", max_processes=processes).reason
zombies = 0
for entry in os.listdir("/proc"):
    try:
        zombies += entry.isdigit() and open(f"/proc/{{entry}}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        pass
print(os.getpid(), sorted(reasons), passed, zombies)
"""


def _under_an_init_that_never_reaps(timeouts: int, processes: int, slots: int) -> str:
    """``timeouts`` sandboxes that time out, then a correct one, run from pid 1 of a new PID
    namespace: a Python process, which never waits for orphans (a container's pid 1 without an
    init). Prints its pid, the timeouts' reasons, the last verdict and the zombies left."""
    namespaces = ["--pid", "--fork", "--mount-proc"] if os.geteuid() == 0 else ["--user", "--map-current-user", "--pid",
                                                                               "--fork", "--mount-proc"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "SKPO_SANDBOX_SLOTS": str(slots)}
    done = subprocess.run(["unshare", *namespaces, sys.executable, "-c", _TIMEOUTS_THEN_A_PASS, str(timeouts),
                           str(processes)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.xdist_group("processes")
def test_timed_out_judges_leave_no_zombie_where_nothing_reaps() -> None:
    # As root, one uid and a process limit of 2 (the judge and the program): a single zombie
    # judge of that uid made the next sandbox fail with BlockingIOError. (In a user namespace
    # the outer process counts too.)
    result = _under_an_init_that_never_reaps(timeouts=5, processes=2 if os.geteuid() == 0 else 3, slots=1)
    assert result == "1 ['timeout after 0.2s'] passed 0"  # (pid 1: the script was the namespace's init)


@pytest.mark.slow(reason="the same zombie-free timeouts, 5 of them with one uid and 2 processes, run in the quick "
                         "test_timed_out_judges_leave_no_zombie_where_nothing_reaps")
@pytest.mark.xdist_group("processes")
def test_fifty_timeouts_then_a_correct_program_passes_where_nothing_reaps() -> None:
    assert _under_an_init_that_never_reaps(timeouts=50, processes=8, slots=2) == "1 ['timeout after 0.2s'] passed 0"
