"""What every child process of the client does first: die with its parent, stop on request.

Each stage runs as a ``multiprocessing`` spawn child. The supervisor owns Ctrl-C:
children ignore SIGINT (a terminal sends it to the whole process group) and stop
on SIGTERM or a quit command (pipeline/stages/runtime.py). If the supervisor
dies, even by SIGKILL, the kernel sends the child SIGTERM (PR_SET_PDEATHSIG) and
the child stops too.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import threading
from types import FrameType

PR_SET_PDEATHSIG = 1
log = logging.getLogger(__name__)


class StopFlag:
    """Set by SIGTERM, a quit command, or the parent's death; checked by every loop."""

    def __init__(self, parent: int) -> None:
        self._event = threading.Event()
        self.reason = ""
        self.parent = parent

    def check_parent(self) -> bool:
        """Set the flag if the parent is gone (a backup for PR_SET_PDEATHSIG); return the flag."""
        if os.getppid() != self.parent:
            self.set("supervisor gone")
        return self._event.is_set()

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


def child_setup(name: str, log_level: int = logging.WARNING) -> StopFlag:
    """Call first thing in a child process; returns the flag its loop must honour."""
    logging.basicConfig(level=log_level, format=f"%(asctime)s {name} %(levelname)s %(message)s")
    # The supervisor's pid as multiprocessing recorded it when it spawned us: getppid() here
    # would already say 1 if the supervisor died while this process was still importing.
    creator = multiprocessing.parent_process()
    parent = creator.pid if creator is not None and creator.pid else os.getppid()
    stop = StopFlag(parent)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the ppid check in parent_gone() remains
        log.debug("prctl unavailable; relying on the ppid check")
    stop.check_parent()  # the parent may have died before prctl took effect

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set("terminated" if os.getppid() == parent else "supervisor gone")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return stop
