"""Tests of the sandboxed code verifier (``skpo.rewards.code``).

Hostile programs (infinite loop, fork bomb, memory bomb, writes outside the scratch
directory, signals to the host, early exits, secret hunting) must each come back promptly
with reward 0 and a reason that names what happened, leaving the host process, its files
and its other processes untouched and no sandbox process behind. HumanEval's canonical
solutions must all pass and broken ones fail.

Every test runs whoever runs the suite: as root the sandbox drops to an exclusive uid, as
another user it runs in an unprivileged user namespace; either way it sees a root of its own
(the system's files and the Python installation, read-only), and the same hostile programs
must be contained (a machine where neither works makes
the sandbox raise, so the tests fail rather than skip). The fork bomb test first checks that
the process limit is really in place before it starts one. Network, IPC, uid locking across
processes and forged verdicts: ``tests/test_sandbox_isolation.py``.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from skpo.paths import REPO_ROOT, benchmark_dir
from skpo.rewards import code as sandbox
from skpo.rewards.base import Verdict
from skpo.rewards.code import (
    SandboxLimits,
    SandboxResult,
    run_python_batch,
    run_python_sandboxed,
    run_sandboxed,
    sandbox_identity_mode,
    verify_humaneval,
    verify_humaneval_batch,
)

# Timeouts are checked by their mechanism (the verdict says the run was cut, no process is left),
# never by a stopwatch a busy machine breaks; a program that sleeps this long and comes back
# sooner was cut, not waited for.
NEVER_S = 60.0

AS_ROOT = os.geteuid() == 0
# What a write outside the sandbox's own tmpfs meets, whoever runs it: what the sandbox sees of
# the host (the system's files, the Python installation) is mounted read-only.
WRITE_REFUSED = "error: read-only file system"


@pytest.fixture
def private_uids(monkeypatch: pytest.MonkeyPatch) -> None:
    """As root: this test's sandboxes take uids from a range of its own, so the processes of a
    run's uid, looked at after the run, are that run's — another process running sandboxes
    (the suite's other worker) could otherwise take the uid the moment the run released it."""
    setup = sandbox._get_setup()
    if setup.identities is not None:
        base = 2_100_000_000 + (os.getpid() % 10_000) * 8
        monkeypatch.setattr(sandbox, "_setup", dataclasses.replace(setup, identities=sandbox._IdentityPool(base, 8)))


def sandbox_processes_left(result: SandboxResult) -> list[int]:
    """Live processes of the sandbox that produced ``result``: those of its exclusive uid
    (root), or this user's processes inside a nested PID namespace (user namespace)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)", status, re.MULTILINE)
        state = re.search(r"^State:\s+(\S)", status, re.MULTILINE)
        nspid = re.search(r"^NSpid:\s+(.*)$", status, re.MULTILINE)
        if not uids or not state or state.group(1) in "ZX":
            continue
        if result.uid is not None:
            ours = str(result.uid) in uids.groups()
        else:
            ours = uids.group(1) == str(os.getuid()) and nspid is not None and len(nspid.group(1).split()) > 1
        if ours:
            pids.append(int(entry.name))
    return pids


def _run_timed(code: str, **options: object) -> tuple[Verdict, float]:
    started = time.monotonic()
    verdict = run_python_sandboxed(code, "", None, **options)  # type: ignore[arg-type]
    return verdict, time.monotonic() - started


# ------------------------------------------------------------------------------------------
# Ordinary programs.
# ------------------------------------------------------------------------------------------


def test_identity_mode_matches_privileges() -> None:
    assert sandbox_identity_mode() == ("exclusive-uid" if AS_ROOT else "user-namespace")


def test_passing_program_runs_unprivileged_in_fresh_scratch_dir() -> None:
    result = run_sandboxed(
        "import os\n"
        "open('notes.txt', 'w').write('scratch is writable')\n"
        "print(os.getuid(), os.getgid(), os.getgroups(), os.getcwd(), open('notes.txt').read())\n"
    )
    assert result.finished and result.returncode == 0 and not result.timed_out
    uid, gid, groups, cwd, *rest = result.stdout.split(" ", 4)
    assert rest == ["scratch is writable\n"]
    if AS_ROOT:
        assert int(uid) == result.uid and int(uid) >= 2_000_000_000
        assert int(gid) == int(uid) and groups == "[]"
    else:  # the user's own ids, mapped into the user namespace
        assert (int(uid), int(gid), result.uid) == (os.getuid(), os.getgid(), None)
    assert cwd.startswith(tempfile.gettempdir()) and "skpo-sandbox-" in cwd
    assert not Path(cwd).exists()  # deleted afterwards


@pytest.mark.parametrize(
    ("code", "tests", "entry_point", "reward", "reason"),
    [
        ("def add(a, b):\n    return a + b\n", "def check(f):\n    assert f(2, 3) == 5\n", "add", 1.0, "passed"),
        ("def add(a, b):\n    return a - b\n", "def check(f):\n    assert f(2, 3) == 5\n", "add", 0.0, "test failed: AssertionError"),
        ("def add(a, b):\n    return a + c\n", "assert add(2, 3) == 5\n", None, 0.0, "error: NameError"),
        ("def add(a, b)\n    return a + b\n", "assert add(2, 3) == 5\n", None, 0.0, "syntax error: SyntaxError"),
        ("import numpy_that_does_not_exist\n", "", None, 0.0, "error: ModuleNotFoundError"),
    ],
)
def test_ordinary_verdicts(code: str, tests: str, entry_point: str | None, reward: float, reason: str) -> None:
    verdict = run_python_sandboxed(code, tests, entry_point)
    assert (verdict.reward, verdict.reason) == (reward, reason)
    assert verdict.correct is (reward == 1.0)


@pytest.mark.parametrize(
    "early_exit",
    [
        "import sys; sys.exit(0)",
        "import os; os._exit(0)",
        "import os; os.execv('/bin/true', ['true'])",
        "raise SystemExit",
    ],
)
def test_leaving_before_the_tests_does_not_pass(early_exit: str) -> None:
    code = f"def add(a, b):\n    return 0\n{early_exit}\n"
    verdict = run_python_sandboxed(code, "assert add(2, 3) == 5\n", None)
    assert verdict.reward == 0.0
    assert verdict.reason.startswith("exited before tests finished")


def test_output_is_capped() -> None:
    result = run_sandboxed("print('x' * 1_000_000)\n", SandboxLimits(max_output_bytes=1000))
    assert result.finished
    assert result.stdout.startswith("x" * 1000) and "more bytes not read" in result.stdout
    assert len(result.stdout) < 1100
    big_file = run_python_sandboxed("print('y' * 3_000_000)\n", "", None, max_file_mb=1)
    # Python ignores SIGXFSZ, so the write fails with EFBIG instead of killing the process.
    assert big_file == Verdict(0.0, False, "file size limit exceeded")


# ------------------------------------------------------------------------------------------
# Hostile programs.
# ------------------------------------------------------------------------------------------


def test_infinite_loop_times_out() -> None:
    verdict, _ = _run_timed("while True:\n    pass\n", timeout_s=1.0)
    assert verdict == Verdict(0.0, False, "timeout after 1.0s")


def test_sleeping_program_times_out() -> None:
    verdict, elapsed = _run_timed(f"import time\ntime.sleep({NEVER_S})\n", timeout_s=1.0)
    assert verdict.reason == "timeout after 1.0s"
    assert elapsed < NEVER_S  # cut, not waited for


def test_memory_bombs_hit_the_memory_limit() -> None:
    at_once, _ = _run_timed("x = bytearray(8 * 1024 ** 3)\n", memory_mb=256)
    assert at_once == Verdict(0.0, False, "killed: memory limit (MemoryError)")
    growing, _ = _run_timed("chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 2 ** 20))\n", memory_mb=256)
    assert growing == Verdict(0.0, False, "killed: memory limit (MemoryError)")


def test_fork_bomb_is_contained(private_uids: None) -> None:
    # Only start a fork bomb once the process limit is known to bind in the sandbox: the
    # limit is set, and the sandbox holds no capability that would let it ignore it.
    probe = run_sandboxed(
        "import os, resource\n"
        "caps = [l.split()[1] for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapPrm'))]\n"
        "print(resource.getrlimit(resource.RLIMIT_NPROC), os.getuid(), *caps)\n"
    )
    assert probe.stdout.split()[:2] == ["(8,", "8)"] and probe.stdout.split()[3:] == ["0000000000000000"] * 2
    assert probe.stdout.split()[2] != "0"
    assert sandbox_identity_mode() in ("exclusive-uid", "user-namespace")  # a limit of its own

    bomb = "import os\nwhile True:\n    os.fork()\n"
    result = run_sandboxed(bomb, SandboxLimits(timeout_s=3.0, max_processes=8))
    verdict = run_python_sandboxed(bomb, "", None, timeout_s=3.0, max_processes=8)
    assert verdict.reward == 0.0
    assert verdict.reason in ("process limit reached (fork failed)", "timeout after 3.0s")
    assert "BlockingIOError" in result.stderr
    assert sandbox_processes_left(result) == []

    # A bomb that swallows the error keeps its 8 processes spinning until the deadline.
    stubborn = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = run_sandboxed(stubborn, SandboxLimits(timeout_s=1.5, max_processes=8))
    assert result.timed_out
    assert sandbox_processes_left(result) == []


def test_fork_bomb_does_not_starve_concurrent_sandboxes() -> None:
    # Each concurrent sandbox has its own uid (root) or user namespace, so one bomb cannot
    # use up the others' limit.
    bomb = ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", "", None)
    benign = ("import subprocess, sys\n", "assert subprocess.run([sys.executable, '-c', 'pass']).returncode == 0\n", None)
    verdicts = run_python_batch([bomb, benign, benign, benign], max_workers=4, timeout_s=2.0)
    assert verdicts[0].reason == "timeout after 2.0s"
    assert [v.reason for v in verdicts[1:]] == ["passed"] * 3


def test_setsid_escapee_is_killed(private_uids: None) -> None:
    result = run_sandboxed(
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    time.sleep(120)\n"
        "    os._exit(0)\n"
        "print('parent done')\n"
    )
    assert result.finished and "parent done" in result.stdout
    assert result.leftover_killed >= 1
    assert sandbox_processes_left(result) == []


def test_cannot_write_outside_scratch() -> None:
    """What the sandbox sees of the host is read-only (its root, the system's files, the Python
    installation), and the rest of the host, the repository included, is not there at all."""
    where = run_sandboxed("import os, sysconfig\nprint(sysconfig.get_paths()['purelib'], os.__file__)\n")
    assert where.finished, where.stderr
    site_packages, stdlib_file = where.stdout.split()
    pyproject = REPO_ROOT / "pyproject.toml"
    repo_file = REPO_ROOT / f".skpo-sandbox-test-{uuid.uuid4().hex}"
    before = (pyproject.stat().st_mtime_ns, pyproject.stat().st_size)
    attempts = {
        "create a file in /": "open('/pwned', 'w')",
        "create a file in /usr/lib": "open('/usr/lib/pwned', 'w')",
        "create a module in site-packages": f"open({site_packages + '/pwned.py'!r}, 'w')",
        "chmod the interpreter": "import os, sys; os.chmod(os.path.realpath(sys.executable), 0o777)",
        "delete a file of /etc": "import os; os.remove('/etc/hosts')",
    }
    for what, code in attempts.items():
        assert run_python_sandboxed(code + "\n", "", None) == Verdict(0.0, False, WRITE_REFUSED), what
    # (the file's owner and mode are checked first: refused either way)
    appended = run_python_sandboxed(f"open({stdlib_file!r}, 'a')\n", "", None)
    assert appended.reason in (WRITE_REFUSED, "error: PermissionError")
    # The repository's folder exists there only where the Python installation lies in it (a
    # virtualenv in the checkout), as an empty path to it: read-only, or, for a checkout under
    # /tmp, folders in the sandbox's own /tmp (where, in a user namespace, it may write).
    in_private_tmp = any(REPO_ROOT.resolve().is_relative_to(d) for d in ("/tmp", "/var/tmp", "/run"))
    for what, code in {"create in the repository": f"open({str(repo_file)!r}, 'w').write('pwned')",
                       "open a repository file for writing": f"open({str(pyproject)!r}, 'ab').close()"}.items():
        verdict = run_python_sandboxed(code + "\n", "", None)
        refused = verdict.reason in ("error: FileNotFoundError", WRITE_REFUSED, "error: PermissionError")
        assert refused or (in_private_tmp and not AS_ROOT), (what, verdict.reason)
    assert not repo_file.exists() and not Path("/pwned").exists()
    assert (pyproject.stat().st_mtime_ns, pyproject.stat().st_size) == before


def test_files_left_in_tmp_are_removed() -> None:
    leaks = [Path(d) / f"skpo-sandbox-leak-{uuid.uuid4().hex}" for d in ("/tmp", "/var/tmp", "/dev/shm")]
    writes = "".join(f"open({str(leak)!r}, 'w').write('left behind')\n" for leak in leaks)
    there = f"import os\nassert all(os.path.exists(p) for p in {[str(p) for p in leaks]!r})\n"
    verdict = run_python_sandboxed(writes + there, "", None)
    assert verdict.reason == "passed"  # each is the sandbox's own tmpfs: allowed, and gone with it
    assert not any(leak.exists() for leak in leaks)


def test_cannot_kill_the_host() -> None:
    bystander = subprocess.Popen(["sleep", "60"])  # a process of the test's user the sandbox must not reach
    try:
        # The sandbox has its own PID namespace: processes outside it do not exist there.
        for target in (str(os.getpid()), str(bystander.pid)):
            verdict = run_python_sandboxed(f"import os, signal\nos.kill({target}, signal.SIGKILL)\n", "", None)
            assert verdict == Verdict(0.0, False, "error: ProcessLookupError"), target
        seen = run_sandboxed("import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n")
        assert seen.stdout.strip() == "[1, 2]"  # the judge and the program, nothing else
        # Its parent is the judge, pid 1 of the namespace, which ignores every signal the
        # program can send: the kill "succeeds" and the run still ends with a verdict.
        for target in ("os.getppid()", "1"):
            verdict = run_python_sandboxed(f"import os, signal\nos.kill({target}, signal.SIGKILL)\n", "", None)
            assert verdict == Verdict(1.0, True, "passed"), target
        own_group = run_python_sandboxed("import os, signal\nos.killpg(0, signal.SIGKILL)\n", "", None)
        assert own_group == Verdict(0.0, False, "killed: SIGKILL")
        # kill(-1) targets every process of the namespace but the caller and init: there is
        # none, so the kernel answers ESRCH.
        everyone = run_python_sandboxed("import os, signal\nos.kill(-1, signal.SIGKILL)\n", "", None)
        assert everyone == Verdict(0.0, False, "error: ProcessLookupError")
        assert bystander.poll() is None  # (and this process, evidently, still runs)
    finally:
        bystander.kill()
        bystander.wait()


def test_environment_secret_is_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"hunter2-{uuid.uuid4().hex}"
    monkeypatch.setenv("SKPO_TEST_SECRET", secret)
    assert os.environ["SKPO_TEST_SECRET"] == secret
    snoop = (
        "import os\n"
        "print(sorted(os.environ))\n"
        "for pid in (os.getppid(), 1):\n"
        "    try:\n"
        "        print(open(f'/proc/{pid}/environ', 'rb').read())\n"
        "    except OSError as exc:\n"
        "        print(type(exc).__name__)\n"
    )
    result = run_sandboxed(snoop)
    assert result.finished
    assert secret not in result.stdout and "SKPO_TEST_SECRET" not in result.stdout
    assert "'HOME'" in result.stdout and "'PATH'" in result.stdout
    # The parent is the judge (pid 1 of the sandbox), non-dumpable: its environ is closed.
    assert result.stdout.count("PermissionError") == 2
    verdict = run_python_sandboxed("import os\nprint(os.environ['SKPO_TEST_SECRET'])\n", "", None)
    assert verdict == Verdict(0.0, False, "error: KeyError")


# ------------------------------------------------------------------------------------------
# HumanEval.
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def humaneval() -> list[dict]:
    with gzip.open(benchmark_dir() / "humaneval.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    assert len(rows) == 164
    return rows


def test_humaneval_canonical_solutions_pass(humaneval: list[dict]) -> None:
    started = time.monotonic()
    verdicts = verify_humaneval_batch([row["canonical_solution"] for row in humaneval], humaneval, max_workers=4)
    failures = [(row["task_id"], v.reason) for row, v in zip(humaneval, verdicts) if not v.correct]
    print(f"HumanEval canonical: {164 - len(failures)}/164 passed in {time.monotonic() - started:.1f}s")
    assert failures == []


@pytest.mark.slow(reason="the same batch of 164 sandboxed programs runs in the quick test_humaneval_canonical_solutions_pass")
def test_humaneval_broken_solutions_fail(humaneval: list[dict]) -> None:
    # Body replaced by `pass`, and every `return ...` replaced by `return None`.
    stubs = ["    pass\n"] * len(humaneval)
    nones = [re.sub(r"\breturn\b[^\n]*", "return None", row["canonical_solution"]) for row in humaneval]
    verdicts = verify_humaneval_batch(stubs + nones, humaneval + humaneval, max_workers=4, timeout_s=3.0)
    passed = [row["task_id"] for row, v in zip(humaneval + humaneval, verdicts) if v.correct]
    assert passed == []
    assert all(
        v.reason.startswith(("test failed", "error: TypeError", "error: AttributeError", "timeout"))
        for v in verdicts
    ), {v.reason for v in verdicts}


def test_verify_humaneval_single_and_mismatch(humaneval: list[dict]) -> None:
    row = humaneval[0]
    assert verify_humaneval(row["canonical_solution"], row) == Verdict(1.0, True, "passed")
    assert verify_humaneval("    return True\n", row).reason == "test failed: AssertionError"
    with pytest.raises(ValueError, match="2 completions but 1 problem rows"):
        verify_humaneval_batch(["a", "b"], [row])
