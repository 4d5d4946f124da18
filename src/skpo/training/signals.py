"""Stop training cleanly on SIGINT/SIGTERM (Ctrl-C, a preempted cluster job).

The first signal only records itself: the trainer finishes the step it is in (a step cannot
be abandoned halfway — the optimizer may already have stepped), saves a checkpoint and stops.
A second signal aborts at once: the default action of that signal, nothing saved since the
last checkpoint.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignals:
    """While entered, ``signum`` is the first SIGINT/SIGTERM received (None: none yet);
    ``doing`` is what the first signal's message says happens next."""

    def __init__(self, doing: str = "stopping after this step and saving a checkpoint") -> None:
        self.signum: int | None = None
        self.doing = doing
        self._previous: dict[int, Any] = {}  # the handlers signal.signal returned

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():  # handlers live in the main thread only
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            # os.write, not print: the handler may run inside another write to stderr
            os.write(2, f"skpo: {name}: {self.doing} (send it again to abort at once, without saving)\n".encode())
            return
        os.write(2, f"skpo: second {name}: aborting without saving\n".encode())
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
