"""User errors and how the command line reports them.

A :class:`UserError` is a problem the user can fix (a config key, a data row, a run
directory, a damaged checkpoint, a full disk); its message names the file, row or key. The
command line prints it as one line ``skpo <cmd>: <message>`` and exits with status 2.
Anything else is a bug and keeps its traceback (exit 1). ``skpo --debug …`` or
``SKPO_DEBUG=1`` shows the traceback of user errors too.

Exit codes: 0 done; 2 user error; 128 + signal number when training stopped on SIGINT/SIGTERM
(after saving a checkpoint) or an evaluation did (nothing written); 1 a bug (traceback).
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable

DEBUG_ENV = "SKPO_DEBUG"
USER_ERROR_EXIT = 2
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class UserError(Exception):
    """A problem the user can fix; the message names the file, row or key (one line)."""


class ConfigError(UserError, ValueError):
    """A configuration problem; the message names the file and key."""


class MethodError(UserError, ValueError):
    """A method document or override that does not resolve; the message names the key."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing, damaged or not this run's; the message names the files."""


class NoCheckpointError(CheckpointError, FileNotFoundError):
    """No checkpoint at all where one was asked for (``--resume`` on a new directory)."""


class DiskFullError(CheckpointError):
    """A save ran out of disk space (or quota); its partial files were removed."""


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; not an error of the user
    and not a bug, so callers that run more after training (evaluation, result files) stop."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention for "ended by signal N"


class EvaluationInterrupted(Exception):
    """An evaluation stopped between two of its batches because a stop signal arrived;
    ``signum`` names it where the caller knows it (``skpo eval`` then exits with 128 + it)."""

    def __init__(self, message: str, signum: int | None = None) -> None:
        super().__init__(message)
        self.signum = signum


def edit_distance(a: str, b: str) -> int:
    """Edits (insert, delete, substitute, or swap two neighbours) turning ``a`` into ``b``: the
    optimal-string-alignment distance, so ``gpro`` is one edit from ``grpo``."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def closest_name(word: str, options: Iterable[str]) -> str | None:
    """The option ``word`` was most likely meant to be, or None: fewest edits first (a swapped
    pair of letters is one edit), then difflib's similarity. An option qualifies within
    ``max(1, len(word) // 3)`` edits, or at difflib's usual 0.6 similarity."""
    w = word.lower()
    scored = []
    for option in dict.fromkeys(options):
        o = option.lower()
        distance, ratio = edit_distance(w, o), difflib.SequenceMatcher(None, w, o).ratio()
        if distance <= max(1, len(w) // 3) or ratio >= 0.6:
            scored.append((distance, -ratio, option))
    return min(scored)[2] if scored else None


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'grpo'?)`` for :func:`closest_name`, else ``""``."""
    close = closest_name(word, options)
    return f" (did you mean {close!r}?)" if close is not None else ""


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0", "false", "no")


def user_message(err: BaseException) -> str | None:
    """The one-line message for an error the user can act on, or None for a bug."""
    if isinstance(err, UserError):
        text = str(err.args[0]) if err.args else type(err).__name__
    elif isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
        text = f"disk full: {err}"
    elif isinstance(err, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        # paths the user gave that are not there (model.path, data.path, --model); our own
        # errors of this kind name the path in their message
        text = str(err.args[0]) if len(err.args) == 1 else str(err)
    else:
        return None
    # a multi-line message (e.g. every invalid key of a config) becomes one line
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def quiet_when_piped() -> None:
    """No model-loading progress bars when stderr is a log or a pipe (call before transformers
    is imported), so that an error there is the one line it should be."""
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:  # already imported (a Python caller): its own switch
            try:
                from transformers.utils import logging as hf_logging  # heavy: the CLI imports this module for --help

                hf_logging.disable_progress_bar()
            except Exception:  # noqa: BLE001 - a cosmetic switch
                pass


def run_command(name: str, main: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """``main(argv)`` with user errors as one line on stderr (exit 2), an interrupted training
    or evaluation as one line (exit 128 + signum), and bugs left to raise."""
    quiet_when_piped()
    try:
        return int(main(argv) or 0)
    except TrainingInterrupted as err:
        print(f"skpo {name}: {err}", file=sys.stderr)
        return err.exit_code
    except EvaluationInterrupted as err:
        if err.signum is None:
            raise
        print(f"skpo {name}: {err}", file=sys.stderr)
        return 128 + err.signum
    except BrokenPipeError:  # the reader went away (``skpo methods | head``): nothing to say
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - interpreter shutdown flushes stdout again
        return 0
    except KeyboardInterrupt:  # Ctrl-C outside the training loop: nothing to save
        if debug_enabled():
            raise
        print(f"skpo {name}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except Exception as err:
        message = user_message(err)
        if message is None or debug_enabled():
            raise
        print(f"skpo {name}: {message}", file=sys.stderr)
        return USER_ERROR_EXIT


def log_to_console(level: int) -> None:
    """The command line's logging: ``skpo: …`` lines, progress (INFO) on stdout and warnings on
    stderr — so that stderr holds what went wrong and an error stays its one line."""
    class _Below(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return record.levelno < logging.WARNING

    class _Live(logging.StreamHandler):  # writes to sys.stdout / sys.stderr as they are now (redirected, captured)
        def __init__(self, which: str) -> None:
            super().__init__()
            self._which = which

        @property
        def stream(self):
            return getattr(sys, self._which)

        @stream.setter
        def stream(self, value) -> None:
            pass

    root = logging.getLogger()
    if getattr(root, "_skpo_console", False):
        root.setLevel(level)
        return
    fmt = logging.Formatter("skpo: %(message)s")
    out, err = _Live("stdout"), _Live("stderr")
    out.addFilter(_Below())
    out.setFormatter(fmt)
    err.setLevel(logging.WARNING)
    err.setFormatter(fmt)
    root.handlers[:] = [out, err]
    root.setLevel(level)
    root._skpo_console = True  # type: ignore[attr-defined]  # (a marker of our own, read above)
