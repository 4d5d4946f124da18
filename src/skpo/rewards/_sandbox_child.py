"""The inside of the code sandbox: what runs between the host and the model's program.

:mod:`skpo.rewards.code` byte-compiles this file with the sandbox's interpreter and starts
``python -I -B <compiled file> <ten integers> <cgroup> <hidden paths>`` (see
:func:`parse_config`). Standard library only, and nothing from ``skpo`` (the sandbox interpreter
may not see the host's packages). One start becomes three processes:

* **outer** — started by the host. Reads the program from stdin, creates the namespaces
  (network, IPC, mount, PID, plus a user namespace when the host is not root), forks the
  judge, waits for it and hands its exit status back. It never runs model code. On SIGTERM
  from the host it kills the judge and reaps it before it exits.
* **judge** — pid 1 of the new PID namespace. Puts the sandbox's root together on a fresh
  tmpfs and switches to it (:func:`_build_root`: the system's files and the Python
  installation read-only, a fresh ``/proc``, a minimal ``/dev``, private tmpfs on ``/tmp``,
  ``/var/tmp``, ``/run`` and ``/dev/shm``; nothing else of the host), drops to the sandbox
  identity for good, sets the limits and the system-call filter, forks the program, then
  reads the tests and runs them itself. When the tests need
  something of the program (the function under test, a helper), it asks the program over a
  pipe and gets back plain data or a handle. Its verdict goes to the host on a pipe the
  program never holds.
* **program** — runs the model's code as ``__main__``, then answers the judge: look up a
  name, call an object, read an attribute.

Why the tests run in the judge and not next to the program: a process cannot keep a secret
from code it runs. A "finished" token, a report pipe or a flag in the same interpreter can
be found (frames, ``gc``, ``/proc/self``, ``ctypes``) and written by the program itself. The
judge holds what decides the verdict: the tests' source and expected values (read from
stdin only after the program was forked and had closed its stdin), the report pipe, and the
comparisons. It is made non-dumpable, so a process of the same uid can neither ptrace it
nor open its ``/proc/1/{mem,fd,environ}``, and as the namespace's init it ignores every
signal the program can send. What crosses from the program is parsed as data: exact
built-in types (``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``, and
``list``/``tuple``/``dict``/``set``/``frozenset`` of them); anything else (an instance of the
program's class, a subclass of ``str`` with its own ``__eq__``) stays in the program as an
opaque handle that compares by identity and has no truth value.
"""

from __future__ import annotations

import _signal as signal  # the C module: ``signal`` would import ``enum`` (~5 ms per sandbox)
import builtins
import ctypes
import os
import resource
import select
import struct
import sys
import types

# The program shares the ``builtins`` module with the code below and may patch it
# (``builtins.len = ...``); module-level names are looked up first, so bind what we use.
from builtins import (  # noqa: UP029 - bound here on purpose, see above
    BaseException,
    Exception,
    IndexError,
    TypeError,
    UnicodeDecodeError,
    ValueError,
    bytes,
    dict,
    getattr,
    hasattr,
    int,
    isinstance,
    len,
    list,
    min,
    open,
    range,
    str,
    type,
)

# Kept out on purpose: json, re, traceback, linecache (imported only when needed). Every
# sandbox pays for each import at start, and start-up is most of a sandbox's cost.

TYPE_CHECKING = False  # True for the type checker only: typing is never imported here
if TYPE_CHECKING:
    from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 32, 4096, 8192, 16384, 1 << 18
# Flags a read-only bind remount must repeat, or the kernel refuses it inside a user
# namespace (they are locked on mounts inherited from the parent namespace).
MS_KEPT = MS_NOSUID | MS_NODEV | MS_NOEXEC | 1024 | 2048 | 4096  # + NOATIME, NODIRATIME, RELATIME
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
# Private tmpfs, empty at start. /run also hides the host's sockets (D-Bus, the user's session
# bus under /run/user), which a read-only mount would not: connect() needs no write access.
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/run")
# All of /dev the sandbox gets (bound from the host), plus its own /dev/shm. Not the GPUs:
# /dev/nvidia* are usually world-writable.
DEVICES = ("null", "zero", "full", "random", "urandom")
MAX_FRAME = 64 * 2**20  # largest message the judge accepts from the program
MAX_TEXT = 2000  # exception messages and labels are cut to this
# Imports the judge may do when the program names a module (``import math`` in the code,
# ``math.fabs`` in the tests): the standard library, minus modules whose import has effects.
NO_IMPORT = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "__hello__", "__phello__"}

_libc = ctypes.CDLL(None, use_errno=True)

# System calls the sandbox refuses (EPERM), by architecture (audit arch, syscall numbers):
# - the kernel keyrings (add_key, request_key, keyctl: keys are per uid and session, not per
#   namespace, so a program could read the host's session keyring or leave keys for a later
#   sandbox of its uid);
# - memory outside the address-space limit (memfd_create and memfd_secret, SysV shmget: pages
#   that RLIMIT_AS does not count; POSIX shared memory lives in the private /dev/shm tmpfs,
#   whose size is capped like /tmp's);
# - namespaces and mounts (unshare, setns, the mount calls old and new): a user namespace of
#   its own would let a program mount a tmpfs of any size, outside every cap;
# - io_uring (a second system-call interface that no filter sees into).
# clone, clone3, socket and socketpair are checked by argument: see CHECKED_SYSCALLS.
_GENERIC_MOUNT_API = {"open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
                      "fspick": 433, "mount_setattr": 442, "open_tree_attr": 467}
_IO_URING = {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427}
BLOCKED_SYSCALLS = {
    "x86_64": (0xC000003E, {"add_key": 248, "request_key": 249, "keyctl": 250, "memfd_create": 319,
                            "memfd_secret": 447, "shmget": 29, "unshare": 272, "setns": 308, "mount": 165,
                            "umount2": 166, "pivot_root": 155, **_GENERIC_MOUNT_API, **_IO_URING}),
    "aarch64": (0xC00000B7, {"add_key": 217, "request_key": 218, "keyctl": 219, "memfd_create": 279,
                             "memfd_secret": 447, "shmget": 194, "unshare": 97, "setns": 268, "mount": 40,
                             "umount2": 39, "pivot_root": 41, **_GENERIC_MOUNT_API, **_IO_URING}),
}
# Checked by argument: clone with any namespace flag fails with EPERM; clone3, whose flags live
# in memory a filter cannot read, fails with ENOSYS, on which the C library falls back to clone
# (threads, fork, posix_spawn); socket and socketpair are refused (EPERM) for every address
# family but AF_UNIX: no IPv4/IPv6 (the network namespace has none anyway), netlink, packet or
# vsock (on a virtual machine, a channel to the hypervisor).
CHECKED_SYSCALLS = {
    "x86_64": {"clone": 56, "clone3": 435, "socket": 41, "socketpair": 53},
    "aarch64": {"clone": 220, "clone3": 435, "socket": 198, "socketpair": 199},
}
CLONE_NAMESPACES = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
AF_UNIX = 1
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


class SetupError(Exception):
    """The sandbox could not be built; the host raises instead of giving a verdict."""


class ProgramGone(Exception):
    """The program process exited (or closed its pipe) while the judge waited for it."""


class ProtocolError(Exception):
    """The program sent something that is not a well-formed message."""


# ------------------------------------------------------------------------------------------
# Small system helpers.
# ------------------------------------------------------------------------------------------


def _call(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)} (errno {err})")


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _call(
        _libc.mount(_bytes(source), _bytes(target), _bytes(fstype), ctypes.c_ulong(flags), _bytes(data)),
        f"mount {target}",
    )


def _prctl(option: int, value: int) -> None:
    _call(_libc.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)), "prctl")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, size: int, pidfd: int | None = None) -> bytes:
    """``size`` bytes from ``fd``; ``ProgramGone`` at end of file, or when ``pidfd`` says the
    writer died while copies of the pipe (held by its children) keep the end of file away."""
    chunks, missing = [], size
    poller = None
    if pidfd is not None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
    while missing:
        if poller is not None:
            ready = {ready_fd for ready_fd, _ in poller.poll()}
            if fd not in ready:
                raise ProgramGone()
        chunk = os.read(fd, min(missing, 1 << 20))
        if not chunk:
            raise ProgramGone()
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def dumps(message: object) -> bytes:
    """Encode ``None``, ``bool``, ``int``, ``str`` and lists of them (the wire format of every
    message: ``N``/``T``/``F``, ``i<len>:<hex>``, ``s<len>:<utf-8>``, ``l<count>:<items>``)."""
    out: list[bytes] = []
    _put(message, out)
    return b"".join(out)


def _put(value: object, out: list[bytes]) -> None:
    if value is None:
        out.append(b"N")
    elif value is True:
        out.append(b"T")
    elif value is False:
        out.append(b"F")
    elif type(value) is int:
        text = b"%x" % value  # hex: int() of a long decimal string is capped at 4300 digits
        out.append(b"i%d:%s" % (len(text), text))
    elif type(value) is str:
        data = value.encode("utf-8", "surrogatepass")
        out.append(b"s%d:" % len(data))
        out.append(data)
    elif type(value) is list:
        out.append(b"l%d:" % len(value))
        for item in value:
            _put(item, out)
    else:
        raise TypeError(f"cannot send a {type(value).__name__}")


def loads(data: bytes) -> object:
    """Decode :func:`dumps` output; anything malformed raises :class:`ProtocolError`."""
    try:
        value, end = _get(data, 0)
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed message: {exc}") from None
    if end != len(data):
        raise ProtocolError("trailing bytes after a message")
    return value


def _get(data: bytes, at: int) -> tuple[object, int]:
    tag = data[at : at + 1]
    at += 1
    if tag in (b"N", b"T", b"F"):
        return {b"N": None, b"T": True, b"F": False}[tag], at
    if tag not in (b"i", b"s", b"l"):
        raise ValueError(f"unknown tag {tag!r}")
    colon = data.index(b":", at, at + 12)
    if not data[at:colon].isdigit():
        raise ValueError("bad length")
    size, at = int(data[at:colon]), colon + 1
    if tag == b"l":
        items = []
        for _ in range(size):  # every item takes at least a byte: bounded by len(data)
            item, at = _get(data, at)
            items.append(item)
        return items, at
    if at + size > len(data):
        raise ValueError("truncated")
    chunk = data[at : at + size]
    if tag == b"i":
        if not chunk.lstrip(b"-").isalnum():
            raise ValueError("bad integer")
        return int(chunk, 16), at + size
    return chunk.decode("utf-8", "surrogatepass"), at + size


def _send(fd: int, message: object) -> None:
    # One write per message: the program's forked children share its pipe, and writes up
    # to PIPE_BUF bytes are not interleaved with theirs.
    data = dumps(message)
    _write_all(fd, struct.pack(">I", len(data)) + data)


def _receive(fd: int, pidfd: int | None = None) -> object:
    (size,) = struct.unpack(">I", _read_exact(fd, 4, pidfd))
    if size > MAX_FRAME:
        raise ProtocolError(f"message of {size} bytes")
    return loads(_read_exact(fd, size, pidfd))


def _read_stdin_frame() -> bytes:
    (size,) = struct.unpack(">I", _read_exact(0, 4))
    return _read_exact(0, size)


def _report(fd: int, message: list) -> None:
    _write_all(fd, dumps(message))
    os.close(fd)


def _exception_text(exc: BaseException) -> tuple[str, str]:
    try:
        message = str(exc)
    except Exception:
        message = "<message could not be printed>"
    return type(exc).__name__[:MAX_TEXT], message[:MAX_TEXT]


# ------------------------------------------------------------------------------------------
# Outer process: namespaces.
# ------------------------------------------------------------------------------------------


def parse_config(argv: list[str]) -> dict:
    """The host passes ten integers, the memory cgroup the host put this process in (``-``:
    none) and the paths to hide should they lie inside the Python installation: see
    ``skpo.rewards.code._run``."""
    names = ("user_namespace", "uid", "gid", "tmpfs_mb", "memory", "cpu", "nproc", "fsize", "nofile", "report_fd")
    if len(argv) < len(names) + 1:
        raise SystemExit(f"expected {len(names)} integers and a cgroup, got {len(argv)} arguments")
    values = [int(v) for v in argv[: len(names)]]
    config: dict = dict(zip(names, values))
    config["limits"] = values[4:9]
    config["cgroup"] = None if argv[len(names)] == "-" else argv[len(names)]
    config["hidden"] = list(argv[len(names) + 1 :])
    return config


def _outer(config: dict) -> None:
    report = config["report_fd"]
    # SIGTERM from the host means "end the sandbox": the handler kills the judge (and with it
    # the namespace), which this process then reaps before it exits, so no judge is left for
    # whatever runs above the host to reap. Held back until the judge's pid is known.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        # If the host thread that started us dies, so do we (and, through the judge's own
        # death signal, everything in the namespaces).
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        program = _read_stdin_frame().decode("utf-8", errors="replace")
        flags = CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWNS | CLONE_NEWPID
        if config["user_namespace"]:
            uid, gid = os.getuid(), os.getgid()
            _call(_libc.unshare(ctypes.c_int(flags | CLONE_NEWUSER)), "unshare(user, net, ipc, mount, pid)")
            # Map only ourselves; "deny" is required before an unprivileged gid_map write.
            for name, line in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as handle:
                    handle.write(line)
        else:
            _call(_libc.unshare(ctypes.c_int(flags)), "unshare(net, ipc, mount, pid)")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing mounted inside leaks out
    except (SetupError, OSError) as exc:
        _report(report, ["setup_error", str(exc)])
        os._exit(1)
    judge = os.fork()
    if judge == 0:
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            _judge(config, program, report)
        except SetupError as exc:
            _report(report, ["setup_error", str(exc)])
        except BaseException:  # a bug here must not look like a verdict
            import traceback

            _report(report, ["setup_error", "judge crashed:\n" + traceback.format_exc()[-MAX_TEXT:]])
        os._exit(0)
    # Not reaped before waitpid below, so the pid still names the judge when the handler runs.
    signal.signal(signal.SIGTERM, lambda *_: os.kill(judge, signal.SIGKILL))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    os.close(report)
    os.close(0)
    _, status = os.waitpid(judge, 0)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number != signal.SIGKILL:
            signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {number})
        os.kill(os.getpid(), number)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


# ------------------------------------------------------------------------------------------
# Judge: pid 1 of the sandbox.
# ------------------------------------------------------------------------------------------


def _unescape(field: str) -> str:
    """A path as ``/proc/self/mountinfo`` writes it: space, tab, newline and backslash as
    ``\\ooo`` octal escapes (without importing ``re``: every import is paid at each start)."""
    parts = field.split("\\")
    return parts[0] + "".join(chr(int(p[:3], 8)) + p[3:] if p[:3].isdigit() else "\\" + p for p in parts[1:])


def _read_only_except(writable: list[str]) -> None:
    """Remount every mount read-only except the mount points in ``writable`` (exactly: a bind
    below one of them is made read-only too) and what lies under ``/proc`` and ``/dev``."""
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        points = [_unescape(line.split()[4]) for line in handle]
    for point in points:
        if point in writable or any(point == top or point.startswith(top + "/") for top in ("/proc", "/dev")):
            continue
        try:
            flags = os.statvfs(point).f_flag
        except OSError:  # shadowed or not reachable by us, hence not by the program either
            continue
        if not flags & MS_RDONLY:
            _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | (flags & MS_KEPT))


def _drop_privileges(config: dict) -> None:
    with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as handle:
        last_cap = int(handle.read())
    for cap in range(last_cap + 1):
        _prctl(PR_CAPBSET_DROP, cap)
    if config["user_namespace"]:

        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]

        # Our uid inside is the host user's (not 0), so no later exec can give them back.
        _call(_libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()), "capset")
    else:
        try:
            os.setgroups([])
            os.setgid(config["gid"])
            os.setuid(config["uid"])  # from root to a non-zero uid: every capability is gone
        except OSError as exc:
            raise SetupError(f"switching to uid {config['uid']}: {exc}") from None
    _prctl(PR_SET_NO_NEW_PRIVS, 1)  # no setuid binary gives anything back
    _prctl(PR_SET_DUMPABLE, 0)  # no ptrace, no /proc/1/{mem,fd,environ} for the program
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # again: a uid change clears it


def _set_limits(limits: list[int]) -> None:
    memory, cpu, nproc, fsize, nofile = limits
    for name, value in (
        ("RLIMIT_CORE", 0),
        ("RLIMIT_NOFILE", nofile),
        ("RLIMIT_FSIZE", fsize),
        ("RLIMIT_NPROC", nproc),
        ("RLIMIT_AS", memory),
    ):
        resource.setrlimit(getattr(resource, name), (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))


def _filter_program(machine: str) -> list[tuple[int, int, int, int]]:
    """The seccomp filter (classic BPF, ``(code, jt, jf, k)``): :data:`BLOCKED_SYSCALLS` and
    every system call of another ABI (x32, 32-bit) fail with EPERM, :data:`CHECKED_SYSCALLS` by
    their first argument; the rest are allowed."""
    if machine not in BLOCKED_SYSCALLS:
        raise SetupError(f"no system-call filter for this architecture ({machine})")
    arch, blocked = BLOCKED_SYSCALLS[machine]
    checked = CHECKED_SYSCALLS[machine]
    ld_w_abs, jeq_k, jge_k, jset_k, ret_k = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, errno_ret = 0x7FFF0000, 0x00050000  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | errno
    nr, arch_at, first_arg = 0, 4, 16  # offsets in struct seccomp_data (the argument's low 32 bits)
    # (code, jump if true, jump if false, k); jumps name a label (None: the next instruction)
    code: list[tuple | str] = [
        (ld_w_abs, None, None, arch_at), (jeq_k, None, "deny", arch),
        (ld_w_abs, None, None, nr), (jge_k, "deny", None, 0x40000000),  # the x32 ABI
        (jeq_k, "enosys", None, checked["clone3"]), (jeq_k, "clone", None, checked["clone"]),
        (jeq_k, "socket", None, checked["socket"]), (jeq_k, "socket", None, checked["socketpair"]),
        *[(jeq_k, "deny", None, number) for number in sorted(set(blocked.values()))],
        (ret_k, None, None, allow),
        "clone", (ld_w_abs, None, None, first_arg), (jset_k, "deny", None, CLONE_NAMESPACES), (ret_k, None, None, allow),
        "socket", (ld_w_abs, None, None, first_arg), (jeq_k, None, "deny", AF_UNIX), (ret_k, None, None, allow),
        "deny", (ret_k, None, None, errno_ret | 1),  # EPERM
        "enosys", (ret_k, None, None, errno_ret | 38),  # ENOSYS
    ]
    labels: dict[str, int] = {}
    at = 0
    for entry in code:
        if isinstance(entry, str):
            labels[entry] = at
        else:
            at += 1
    program: list[tuple[int, int, int, int]] = []
    for entry in code:
        if isinstance(entry, str):
            continue
        op, jt, jf, k = entry
        here = len(program) + 1  # jumps count from the next instruction
        program.append((op, 0 if jt is None else labels[jt] - here, 0 if jf is None else labels[jf] - here, k))
    return program


def _refuse_syscalls() -> None:
    """Install :func:`_filter_program`. Needs no privilege once no_new_privs is set."""
    program = _filter_program(os.uname().machine)

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Filter))]

    filters = (Filter * len(program))(*[Filter(*f) for f in program])
    fprog = Program(len(program), filters)
    _call(_libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(fprog),
                      ctypes.c_ulong(0), ctypes.c_ulong(0)), "seccomp")


def _minimal_dev(root: str, tmpfs: str) -> None:
    """``root``/dev: a read-only tmpfs holding only ``DEVICES`` and a private ``shm``."""
    # Bound from /proc/self/fd/N: no mknod in a user namespace, but a bind mount of an
    # existing node works.
    dev = root + "/dev"
    nodes = {name: os.open(f"/dev/{name}", os.O_PATH) for name in DEVICES}
    os.mkdir(dev, 0o755)
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,nr_inodes=64,mode=0755")
    for name, fd in nodes.items():
        os.close(os.open(f"{dev}/{name}", os.O_CREAT | os.O_WRONLY, 0o666))
        _mount(f"/proc/self/fd/{fd}", f"{dev}/{name}", None, MS_BIND)
        os.close(fd)
    os.symlink("/proc/self/fd", f"{dev}/fd")
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{fd}", f"{dev}/{name}")
    os.mkdir(f"{dev}/shm")
    _mount("tmpfs", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV, tmpfs)
    _mount(None, dev, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC)


# What the sandbox sees of the host, read-only: the system's programs and libraries, a few files
# of /etc that the C library and Python read, and the Python installation the judge runs on.
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
ETC_FILES = ("ld.so.cache", "ld.so.conf", "localtime", "timezone", "nsswitch.conf", "hosts", "host.conf",
             "protocols", "services", "mime.types")
# Where the new root is put together before the switch: a directory of the host that nothing
# the sandbox needs lies under (the first that exists).
ASSEMBLY_POINTS = ("/sys", "/mnt", "/media", "/srv", "/boot", "/opt")
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
MNT_DETACH = 2


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _runtime_paths() -> list[str]:
    """Directories of the Python installation this interpreter runs from: its prefixes, every
    directory on the way from ``sys.executable`` through its links to the binary, and those of
    the shared libraries it has loaded (``/proc/self/maps``)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    link = sys.executable
    for _ in range(40):
        paths.add(os.path.dirname(link))
        if not os.path.islink(link):
            break
        link = os.path.normpath(os.path.join(os.path.dirname(link), os.readlink(link)))
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/") and ".so" in fields[5]:
                paths.add(os.path.dirname(fields[5].rstrip("\n")))
    return sorted(os.path.normpath(p) for p in paths if p and os.path.isabs(p) and os.path.isdir(p))


def _make_dirs(root: str, path: str, forbidden: list[str]) -> None:
    """``root + path`` as plain directories, created one by one, never through a link or into a
    bind mount (``forbidden``): what is made here must never land on the host."""
    at = root
    for part in path.strip("/").split("/"):
        at = f"{at}/{part}"
        if any(_within(at, f) for f in forbidden) or os.path.islink(at):
            raise SetupError(f"building the sandbox's root: {at} lies in a bind mount or behind a link")
        if not os.path.isdir(at):
            os.mkdir(at, 0o755)


def _bind(source: str, root: str, forbidden: list[str]) -> None:
    _make_dirs(root, source, forbidden)
    _mount(source, root + source, None, MS_BIND | MS_REC)  # recursive: below locked mounts in a user namespace
    forbidden.append(root + source)


def _copy_etc(root: str) -> None:
    os.mkdir(root + "/etc", 0o755)
    for name in ETC_FILES:
        host = "/etc/" + name
        try:
            if os.path.islink(host):
                os.symlink(os.readlink(host), f"{root}/etc/{name}")
            elif os.path.isfile(host) and os.path.getsize(host) <= 4 << 20:
                with open(host, "rb") as source, open(f"{root}/etc/{name}", "wb") as target:
                    target.write(source.read())
                os.chmod(f"{root}/etc/{name}", 0o644)
        except OSError:  # unreadable here: the sandbox goes without it
            continue


def _build_root(tmpfs: str, hidden: list[str]) -> str:
    """Put together the sandbox's file system on a fresh tmpfs and make it the root.

    Only this is there: ``SYSTEM_DIRS`` and the Python installation (:func:`_runtime_paths`)
    bound read-only from the host, copies of ``ETC_FILES``, a fresh ``/proc``, the minimal
    ``/dev``, and private writable tmpfs on ``/tmp``, ``/var/tmp``, ``/run`` and ``/dev/shm``.
    Nothing else of the host (the project's checkout, its data, runs, home directories) exists
    in it; ``hidden`` paths that lie inside a bound directory are covered by an empty one. The
    old root is detached (``pivot_root``), so no path leads back to it.
    """
    runtime = _runtime_paths()
    needed = [f"/{name}" for name in SYSTEM_DIRS] + runtime + ["/proc", "/dev"]
    point = next((p for p in ASSEMBLY_POINTS if os.path.isdir(p) and not os.path.islink(p)
                  and not any(_within(n, p) for n in needed)), None)
    if point is None:
        raise SetupError(f"no directory to build the sandbox's root on (tried {', '.join(ASSEMBLY_POINTS)})")
    root = point
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=8m,nr_inodes=4096,mode=0755")
    forbidden: list[str] = []
    for directory in PRIVATE_DIRS:  # first, so that an installation under /tmp is bound inside it
        os.makedirs(root + directory, 0o755, exist_ok=True)
        _mount("tmpfs", root + directory, "tmpfs", MS_NOSUID | MS_NODEV, tmpfs)
    for name in SYSTEM_DIRS:
        host = f"/{name}"
        if os.path.islink(host):
            os.symlink(os.readlink(host), root + host)
        elif os.path.isdir(host):
            _bind(host, root, forbidden)
    bound = [f"/{name}" for name in SYSTEM_DIRS if os.path.isdir(f"/{name}") and not os.path.islink(f"/{name}")]
    for path in sorted(runtime, key=os.path.realpath):  # a directory before what lies in it
        real = os.path.realpath(path)
        if not any(_within(real, os.path.realpath(b)) for b in bound):
            _bind(real, root, forbidden)
            bound.append(real)
        # the path as the interpreter names it, where a link on the host leads there
        at = ""
        for part in path.strip("/").split("/"):
            at = f"{at}/{part}"
            if os.path.islink(at) and not os.path.lexists(root + at):
                if os.path.dirname(at) != "/":
                    _make_dirs(root, os.path.dirname(at), forbidden)
                os.symlink(os.readlink(at), root + at)
    for path in hidden:
        real = os.path.realpath(path)
        if os.path.isdir(real) and any(_within(real, b) and real != b for b in bound):
            _mount("tmpfs", root + real, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k,nr_inodes=4,mode=0555")
    _copy_etc(root)
    os.mkdir(root + "/proc", 0o555)
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    try:
        _minimal_dev(root, tmpfs)
    except OSError as exc:
        raise SetupError(f"/dev: {exc}") from None
    os.chdir(root)
    if _libc.syscall(ctypes.c_long(PIVOT_ROOT[os.uname().machine]), b".", b".") == 0:
        # the old root now lies on top of the new one: detached, no path leads back to it
        _call(_libc.umount2(b".", ctypes.c_int(MNT_DETACH)), "detaching the host's root")
    else:  # a root pivot_root cannot leave (an initramfs): moved over it, and chroot
        _mount(".", "/", None, MS_MOVE)
        os.chroot(".")
    os.chdir("/")
    _read_only_except(["/tmp", "/var/tmp", "/run", "/dev/shm"])
    return root


def _judge(config: dict, program: str, report: int) -> None:
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if config["cgroup"]:
        # Over the memory cgroup's limit, the kernel kills the judge or the program, never the
        # outer process: its death would leave the judge to whatever reaps orphans above skpo.
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("1000")
    tmpfs = f"size={config['tmpfs_mb']}m,nr_inodes=4096,mode=1777"
    if os.uname().machine not in PIVOT_ROOT:
        raise SetupError(f"no sandbox root for this architecture ({os.uname().machine})")
    _build_root(tmpfs, config["hidden"])
    _drop_privileges(config)
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)  # init ignores default-action signals from inside
    os.umask(0o077)
    scratch = "/tmp/skpo-sandbox-" + os.urandom(6).hex()
    os.mkdir(scratch, 0o700)
    with open(os.path.join(scratch, "program.py"), "w", encoding="utf-8") as handle:
        handle.write(program)  # for tracebacks (linecache) and programs that read themselves
    os.chdir(scratch)
    os.environ["HOME"] = os.environ["TMPDIR"] = scratch
    pid_namespace = os.readlink("/proc/self/ns/pid")
    _set_limits(config["limits"])
    _refuse_syscalls()  # after no_new_privs (_drop_privileges); the program inherits it

    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(requests_w)
        os.close(replies_r)
        _program(program, requests_r, replies_w, report)
    os.close(requests_r)
    os.close(replies_w)
    del program
    # From here on the program runs: whatever goes wrong is a failed verdict, never a setup
    # error (which the host raises), or a program could crash the caller on purpose.
    pidfd = None
    try:
        # Only now, with the program forked and its stdin closed, do the tests enter memory.
        job: Any = loads(_read_stdin_frame())  # the host's job: [tests, entry point, prelude]
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        channel = _Channel(requests_w, replies_r, pid)
        pidfd = channel.pidfd
        outcome, failure, trace = _decide(channel, job)
    except BaseException as exc:
        outcome, failure, trace = "failed", list(_exception_text(exc)), ""
    os.close(requests_w)  # the program reads end of file and exits
    status, leftovers = _end_everything(pid, pidfd)
    try:
        if trace:  # after the program is gone; the program may have filled stderr
            sys.stderr.write(trace)
            sys.stderr.flush()
    except Exception:
        pass
    _report(report, ["report", outcome, failure, status, leftovers, pid_namespace])


def _decide(channel: _Channel, job: list) -> tuple[str, list[str] | None, str]:
    """Run the tests against the program: ``("passed", None, "")`` only when they all ran to
    their end here; otherwise ``("failed", [exception name, message] or None, traceback)``."""
    tests, entry_point, prelude = job
    try:
        first = channel.receive()
        if first == ["ready"]:
            _run_tests(channel, tests, entry_point, prelude)
            return "passed", None, ""
        if type(first) is list and len(first) == 4 and first[0] == "raise":
            return "failed", [_text(first[1]), _text(first[2])], ""  # the program printed its traceback
        raise ProtocolError("the program's first message is not 'ready'")
    except ProgramGone:
        return "failed", None, ""
    except BaseException as exc:
        name, message = getattr(exc, "program_exception", None) or _exception_text(exc)
        try:
            import linecache  # (with traceback: ~20 ms of imports, paid only on failure)
            import traceback

            for filename, source in _SOURCES.items():  # so that the failing test line shows
                linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            trace = traceback.format_exc()
            program_trace = getattr(exc, "program_traceback", "")
            if program_trace:
                trace = f"{trace}\nIn the program:\n{program_trace}"
        except BaseException:  # e.g. MemoryError again: the verdict does not need the trace
            trace = ""
        return "failed", [name, message], trace


def _end_everything(pid: int, pidfd: int | None) -> tuple[int | None, int]:
    """Wait briefly for the program to exit, then kill whatever is left in the namespace.

    Returns the program's exit status (negative: signal) and how many other processes were
    still alive and had to be killed.
    """
    if pidfd is not None:
        select.select([pidfd], [], [], 1.0)
    leftovers = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        entries = []
    for entry in entries:
        if entry.isdigit() and int(entry) not in (1, pid):
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                    state = handle.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            leftovers += state not in "ZX"
    try:
        os.kill(-1, signal.SIGKILL)  # from init: every other process of the namespace
    except ProcessLookupError:
        pass
    status = None
    while True:
        try:
            child, raw = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if child == pid:
            status = os.waitstatus_to_exitcode(raw)
    return status, leftovers


# ------------------------------------------------------------------------------------------
# Judge side of the conversation: the tests' view of the program.
# ------------------------------------------------------------------------------------------

_EXACT_DATA = (type(None), bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset)
# Program exceptions re-raised under their own built-in class. Not these: control flow
# (StopIteration ends a ``for`` or ``map`` in the tests early) and exits.
_NOT_RERAISED = {"StopIteration", "StopAsyncIteration", "GeneratorExit", "SystemExit", "KeyboardInterrupt"}


def _text(value: object) -> str:
    if type(value) is not str:
        raise ProtocolError("expected text")
    return value[:MAX_TEXT]


class ProgramError(Exception):
    """An exception of the program that is not re-raised under a built-in class."""


class ProgramExit(BaseException):
    """``SystemExit``, ``KeyboardInterrupt`` or ``GeneratorExit`` raised in the program."""


class Remote:
    """A handle to an object that lives in the program (a function, an instance, ...).

    Calling it or reading an attribute asks the program. It compares by identity and has
    no truth value: a result the tests compare must be plain data, so the program cannot
    answer with an object whose ``__eq__`` or ``__bool__`` says yes to everything.
    """

    __slots__ = ("_channel", "_label", "_ref")

    def __init__(self, channel: _Channel, ref: int, label: str) -> None:
        self._channel, self._ref, self._label = channel, ref, label

    def __call__(self, *args: object, **kwargs: object) -> object:
        positional = [_to_program(a) for a in args]
        named = [[k, _to_program(v)] for k, v in kwargs.items()]
        return self._channel.request(["call", self._ref, positional, named])

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._channel.request(["getattr", self._ref, name])

    def __bool__(self) -> bool:
        raise TypeError(f"the truth of a program object ({self._label}) is not decided by the program")

    def __repr__(self) -> str:
        return f"<program object: {self._label}>"


def _to_program(value: Any) -> list:  # (checked here by its exact type)
    kind = type(value)
    if value is None:
        return ["N"]
    if kind is bool:
        return ["B", value]
    if kind is int:
        return ["I", hex(value)]
    if kind is float:
        return ["F", value.hex()]
    if kind is complex:
        return ["C", value.real.hex(), value.imag.hex()]
    if kind is str:
        return ["S", value]
    if kind is bytes:
        return ["Y", value.hex()]
    if kind in (list, tuple, set, frozenset):
        return [{list: "L", tuple: "T", set: "E", frozenset: "Z"}[kind], [_to_program(v) for v in value]]  # type: ignore[index]  # (the keys join to ABCMeta)
    if kind is dict:
        return ["D", [[_to_program(k), _to_program(v)] for k, v in value.items()]]
    if kind is Remote:
        return ["R", value._ref]
    raise TypeError(f"a {kind.__name__} cannot be passed to the program: only plain data and the program's own objects")


_CONTAINERS = {"L": list, "T": tuple, "E": set, "Z": frozenset}


def _from_program(node: object, channel: _Channel) -> object:
    """Rebuild a value the program sent, trusting nothing: every tag and type is checked."""
    if type(node) is not list or not node or type(node[0]) is not str:
        raise ProtocolError("malformed value")
    tag, rest = node[0], node[1:]
    if tag == "N" and not rest:
        return None
    if len(rest) == 1:
        (item,) = rest
        if tag == "B" and type(item) is bool:
            return item
        if tag == "S" and type(item) is str:
            return item
        if tag == "I" and type(item) is str:
            return int(item, 16)
        if tag == "F" and type(item) is str:
            return float.fromhex(item)
        if tag == "Y" and type(item) is str:
            return bytes.fromhex(item)
        if tag in _CONTAINERS and type(item) is list:
            return _CONTAINERS[tag](_from_program(v, channel) for v in item)
        if tag == "D" and type(item) is list:
            pairs = {}
            for pair in item:
                if type(pair) is not list or len(pair) != 2:
                    raise ProtocolError("malformed dict")
                pairs[_from_program(pair[0], channel)] = _from_program(pair[1], channel)
            return pairs
    if tag == "C" and len(rest) == 2 and all(type(v) is str for v in rest):
        return complex(float.fromhex(rest[0]), float.fromhex(rest[1]))
    if tag == "R" and len(rest) == 2 and type(rest[0]) is int and type(rest[1]) is str:
        return Remote(channel, rest[0], rest[1][:100])
    raise ProtocolError(f"malformed value with tag {tag!r}")


def _remote_exception(name: str, message: str, trace: str) -> BaseException:
    cls = builtins.__dict__.get(name)
    exc: BaseException
    if name in _NOT_RERAISED:
        exc = ProgramExit(f"{name}: {message}")
    elif isinstance(cls, type) and issubclass(cls, Exception):
        try:
            exc = cls(message)
        except Exception:
            exc = ProgramError(f"{name}: {message}")
    else:
        exc = ProgramError(f"{name}: {message}")
    exc.program_exception = [name, message]  # type: ignore[union-attr]  # an attribute of our own
    exc.program_traceback = trace  # type: ignore[union-attr]
    return exc


class _Channel:
    def __init__(self, to_program: int, from_program: int, pid: int) -> None:
        self.to_program, self.from_program = to_program, from_program
        try:
            self.pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.pidfd = None

    def receive(self) -> object:
        return _receive(self.from_program, self.pidfd)

    def request(self, message: list) -> object:
        try:
            _send(self.to_program, message)
        except BrokenPipeError:
            raise ProgramGone() from None
        reply = self.receive()
        if type(reply) is list and len(reply) == 2 and reply[0] == "ok":
            return _from_program(reply[1], self)
        if type(reply) is list and len(reply) == 4 and reply[0] == "raise":
            raise _remote_exception(_text(reply[1]), _text(reply[2]), _text(reply[3]) if reply[3] else "")
        raise ProtocolError("malformed reply")

    def lookup(self, name: str) -> tuple[bool, object]:
        """Whether the program defines ``name`` at module level, and its value."""
        try:
            _send(self.to_program, ["lookup", name])
        except BrokenPipeError:
            raise ProgramGone() from None
        reply = self.receive()
        if reply == ["missing"]:
            return False, None
        if type(reply) is list and len(reply) == 4 and reply[0] == "module":
            module, ref, label = _text(reply[1]), reply[2], _text(reply[3])
            if type(ref) is not int:
                raise ProtocolError("malformed module reply")
            top = module.split(".")[0]
            importable = all(part.isidentifier() for part in module.split("."))
            if importable and top in sys.stdlib_module_names and top not in NO_IMPORT:
                # The judge's own copy: a module the program patched stays patched there only.
                return True, __import__(module, fromlist=["_"])
            return True, Remote(self, ref, label)
        if type(reply) is list and len(reply) == 2 and reply[0] == "ok":
            return True, _from_program(reply[1], self)
        if type(reply) is list and len(reply) == 4 and reply[0] == "raise":
            raise _remote_exception(_text(reply[1]), _text(reply[2]), _text(reply[3]) if reply[3] else "")
        raise ProtocolError("malformed lookup reply")


class _TestGlobals(dict):
    """The tests' globals: their own names first, then the program's module-level names.

    A name of a built-in (``len``, ``sorted``, ``print``) is never taken from the program,
    so the program cannot change how the tests compute; the entry point is the exception.
    """

    def __init__(self, channel: _Channel, entry_point: str | None) -> None:
        super().__init__(__name__="__main__", __builtins__=builtins)
        self._channel, self._entry_point = channel, entry_point

    def __missing__(self, name: str) -> object:
        if name.startswith("__") or (name in builtins.__dict__ and name != self._entry_point):
            raise KeyError(name)
        found, value = self._channel.lookup(name)
        if not found:
            raise KeyError(name)
        self[name] = value
        return value


_SOURCES: dict[str, str] = {}  # for tracebacks, registered with linecache only on failure


def _compile_shown(source: str, filename: str) -> types.CodeType:
    _SOURCES[filename] = source
    return compile(source, filename, "exec")


def _run_tests(channel: _Channel, tests: str, entry_point: str | None, prelude: str) -> None:
    namespace = _TestGlobals(channel, entry_point)
    if prelude:  # trusted code the tests may call (HumanEval's helpers), run here
        exec(_compile_shown(prelude, "<prelude>"), namespace)
    exec(_compile_shown(tests, "<tests>"), namespace)
    if entry_point:
        check = dict.get(namespace, "check")
        if type(check) is not types.FunctionType or check.__code__.co_filename != "<tests>":
            raise NameError("the tests define no function 'check'")
        found, candidate = channel.lookup(entry_point)
        if not found:
            raise NameError(f"name {entry_point!r} is not defined")
        namespace[entry_point] = candidate  # helpers that call it by name get the program's
        check(candidate)


# ------------------------------------------------------------------------------------------
# Program side: run the model's code, then answer the judge.
# ------------------------------------------------------------------------------------------


def _program(source: str, requests: int, replies: int, report: int) -> None:
    os.close(report)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the tests are still waiting in stdin: the program never sees them
    os.close(devnull)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # The judge stays non-dumpable; the program may read its own /proc/self/{fd,mem}.
    _prctl(PR_SET_DUMPABLE, 1)
    sys.argv = ["program.py"]
    namespace = {"__name__": "__main__", "__file__": "program.py", "__builtins__": builtins}
    try:
        exec(compile(source, "program.py", "exec"), namespace)
        _flush()
    except BaseException as exc:  # SystemExit too: leaving early is a failure
        import traceback

        traceback.print_exc()
        _flush(quiet=True)
        name, message = _exception_text(exc)
        _send(replies, ["raise", name, message, ""])
        os._exit(1)
    _send(replies, ["ready"])
    _Server(namespace, requests, replies).serve()
    _flush(quiet=True)
    os._exit(0)


def _flush(quiet: bool = False) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            if not quiet:
                raise


class _Server:
    """Answers the judge. Runs inside the untrusted interpreter, so it is only as reliable as
    the program lets it be: a program that breaks it only makes its own tests fail."""

    def __init__(self, namespace: dict, requests: int, replies: int) -> None:
        self.namespace, self.requests, self.replies = namespace, requests, replies
        self.objects: list[object] = []

    def serve(self) -> None:
        while True:
            try:
                message = _receive(self.requests)
            except ProgramGone:
                return
            try:
                reply = self.answer(message)
            except BaseException as exc:
                import traceback

                name, text = _exception_text(exc)
                reply = ["raise", name, text, traceback.format_exc()[-4 * MAX_TEXT :]]
            _flush(quiet=True)
            try:
                _send(self.replies, reply)
            except Exception as exc:  # e.g. MemoryError while encoding a huge answer
                _send(self.replies, ["raise", *_exception_text(exc), ""])

    def answer(self, message: Any) -> list:  # (a request as decoded: [kind, ...])
        kind = message[0]
        if kind == "lookup":
            if message[1] not in self.namespace:
                return ["missing"]
            value = self.namespace[message[1]]
            if isinstance(value, types.ModuleType):
                return ["module", value.__name__, self.keep(value), f"module {value.__name__}"]
            return ["ok", self.encode(value)]
        if kind == "getattr":
            return ["ok", self.encode(getattr(self.objects[message[1]], message[2]))]
        if kind == "call":
            function = self.objects[message[1]]
            args = [self.decode(a) for a in message[2]]
            kwargs = {k: self.decode(v) for k, v in message[3]}
            return ["ok", self.encode(function(*args, **kwargs))]
        raise ValueError(f"unknown request {kind!r}")

    def keep(self, value: object) -> int:
        self.objects.append(value)
        return len(self.objects) - 1

    def encode(self, value: Any) -> list:  # (checked here by its exact type)
        kind = type(value)
        if kind not in _EXACT_DATA and kind.__module__ == "numpy" and hasattr(value, "tolist"):
            plain = value.tolist()  # numpy scalars and arrays: their Python values
            if type(plain) is not kind:
                return self.encode(plain)
        if kind in _EXACT_DATA and kind not in (list, tuple, set, frozenset, dict):
            return _to_program(value)
        if kind in (list, tuple, set, frozenset):
            return [{list: "L", tuple: "T", set: "E", frozenset: "Z"}[kind], [self.encode(v) for v in value]]  # type: ignore[index]  # (the keys join to ABCMeta)
        if kind is dict:
            return ["D", [[self.encode(k), self.encode(v)] for k, v in value.items()]]
        try:
            label = f"{kind.__name__} {getattr(value, '__qualname__', '')}".strip()
        except Exception:
            label = "object"
        return ["R", self.keep(value), label[:100]]

    def decode(self, node: list) -> object:
        tag = node[0]
        if tag == "R":
            return self.objects[node[1]]
        if tag in _CONTAINERS:
            return _CONTAINERS[tag](self.decode(v) for v in node[1])
        if tag == "D":
            return {self.decode(k): self.decode(v) for k, v in node[1]}
        return _from_program(node, None)  # type: ignore[arg-type]


if __name__ == "__main__":
    _outer(parse_config(sys.argv[1:]))
