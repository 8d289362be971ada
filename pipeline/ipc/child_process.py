"""What every child process of the client does first: die with its parent, stop on request.

Each stage runs as a ``multiprocessing`` spawn child. The supervisor owns Ctrl-C:
children ignore SIGINT (a terminal sends it to the whole process group) and stop
on SIGTERM or a quit command (pipeline/stages/runtime.py). If the supervisor
dies, even by SIGKILL, the kernel sends the child SIGTERM (PR_SET_PDEATHSIG) and
the child stops too; should its way out hang, an alarm ends it ORPHAN_GRACE seconds
later, so nothing outlives the supervisor for long.

The stop flag is set from the SIGTERM handler, so it takes no lock: a handler runs
between two bytecodes of the main thread, and a ``threading.Event`` set there while the
main thread was inside that event's own wait() (its condition's lock held) blocked
forever, with the process left running after its supervisor had died.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import select
import signal
from types import FrameType

PR_SET_PDEATHSIG = 1
ORPHANED = "supervisor gone"
ORPHAN_GRACE = 5  # seconds a child whose supervisor died gets to exit on its own
log = logging.getLogger(__name__)


class StopFlag:
    """Set by SIGTERM, a quit command, or the parent's death; checked by every loop.

    Safe to set from a signal handler and to wait on from any thread: the flag is a
    plain attribute and the wake-up a byte written to a pipe that is never drained, so
    every wait() from then on returns at once.
    """

    def __init__(self, parent: int, orphan_grace: int = 0) -> None:
        self.reason = ""
        self.parent = parent
        self.orphan_grace = orphan_grace  # seconds an orphan gets to exit (0: no alarm)
        self._set = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def check_parent(self) -> bool:
        """Set the flag if the parent is gone (a backup for PR_SET_PDEATHSIG); return the flag."""
        if os.getppid() != self.parent:
            self.set(ORPHANED)
        return self._set

    def set(self, reason: str) -> None:
        if self._set:
            return
        self.reason = reason
        self._set = True
        if reason == ORPHANED and self.orphan_grace > 0:
            signal.alarm(self.orphan_grace)  # SIGALRM's default action ends the process
        with contextlib.suppress(OSError):  # closed: nobody waits any more
            os.write(self._wake_w, b"\0")

    def __bool__(self) -> bool:
        return self._set

    def wait(self, timeout: float | None) -> bool:
        """Sleep up to ``timeout`` seconds (None: no limit) or until the flag is set;
        return the flag."""
        if not self._set and (timeout is None or timeout > 0):
            select.select([self._wake_r], [], [], timeout)  # PEP 475: resumed after a handler
        return self._set

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def __del__(self) -> None:
        if getattr(self, "_wake_r", -1) >= 0:  # not there if __init__ failed
            self.close()


def child_setup(name: str, log_level: int = logging.WARNING) -> StopFlag:
    """Call first thing in a child process; returns the flag its loop must honour."""
    logging.basicConfig(level=log_level, format=f"%(asctime)s {name} %(levelname)s %(message)s")
    # The supervisor's pid as multiprocessing recorded it when it spawned us: getppid() here
    # would already say 1 if the supervisor died while this process was still importing.
    creator = multiprocessing.parent_process()
    parent = creator.pid if creator is not None and creator.pid else os.getppid()
    stop = StopFlag(parent, orphan_grace=ORPHAN_GRACE)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the ppid check in parent_gone() remains
        log.debug("prctl unavailable; relying on the ppid check")
    stop.check_parent()  # the parent may have died before prctl took effect

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set("terminated" if os.getppid() == parent else ORPHANED)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return stop
