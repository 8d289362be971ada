"""pipeline/ipc/child_process.py: the stop flag every child loop honours, and its parent watch."""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import multiprocessing.queues
import os
import signal
import subprocess
import sys
import threading
import time

from pipeline.ipc.child_process import ORPHAN_GRACE, StopFlag, child_setup


def test_stop_flag_keeps_the_first_reason() -> None:
    stop = StopFlag(os.getppid())
    assert not stop and not stop.check_parent()
    stop.set("quit")
    stop.set("terminated")
    assert stop and stop.reason == "quit" and stop.wait(0)


def test_a_flag_whose_construction_failed_is_collected_quietly() -> None:
    seen: list[object] = []
    old = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        with contextlib.suppress(TypeError):
            StopFlag()  # type: ignore[call-arg]  # no parent: __init__ raises
        gc.collect()
    finally:
        sys.unraisablehook = old
    assert seen == []  # __del__ ran on a half-made flag without an error


def test_a_dead_parent_sets_the_flag() -> None:
    stop = StopFlag(parent=999_999_999)  # not our parent
    assert stop.check_parent() and stop.reason == "supervisor gone"


def _child(report: multiprocessing.queues.Queue[tuple[str, object]]) -> None:
    stop = child_setup("test")
    report.put(("ready", os.getpid()))
    while not stop.check_parent():
        stop.wait(0.05)
    report.put(("stopped", stop.reason))


def test_child_stops_on_sigterm_and_ignores_sigint() -> None:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q,))
    p.start()
    try:
        assert q.get(timeout=30)[0] == "ready"
        assert p.pid is not None
        os.kill(p.pid, signal.SIGINT)  # the supervisor owns Ctrl-C
        time.sleep(0.3)
        assert p.is_alive()
        os.kill(p.pid, signal.SIGTERM)
        assert q.get(timeout=10) == ("stopped", "terminated")
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join()
    assert p.exitcode == 0


# Sets fresh flags from a signal handler, at whatever point of wait() the signal lands,
# for two seconds. threading.Event deadlocked here (its lock taken twice by one thread),
# in 3 of 5 runs: the process hung, or died of nested handlers.
SIGNAL_STORM = """
import os, signal, sys, time
from pipeline.ipc.child_process import StopFlag
current = [StopFlag(os.getppid())]
signal.signal(signal.SIGUSR1, lambda s, f: current[0].set("signal"))
done = []
signal.signal(signal.SIGUSR2, lambda s, f: done.append(1))
pid = os.getpid()
if os.fork() == 0:
    end = time.monotonic() + 2
    while time.monotonic() < end:
        os.kill(pid, signal.SIGUSR1)
        time.sleep(0.0005)
    os.kill(pid, signal.SIGUSR2)
    os._exit(0)
woken = 0
while not done:
    stop = StopFlag(os.getppid())
    current[0] = stop
    while not stop and not done:
        stop.wait(0.001)
    woken += bool(stop)
    stop.close()
os.wait()
print(woken)
"""


def test_the_flag_is_set_safely_from_a_signal_handler_that_interrupts_its_wait() -> None:
    from pipeline.demo import ROOT

    p = subprocess.run([sys.executable, "-c", SIGNAL_STORM], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    assert int(p.stdout) > 100  # the handler's sets were seen by the waits


def test_a_set_flag_wakes_a_wait_in_another_thread_at_once() -> None:
    stop = StopFlag(os.getppid())
    woke: list[float] = []
    t = threading.Thread(target=lambda: woke.append(time.monotonic()) if stop.wait(30) else None)
    t.start()
    time.sleep(0.05)
    stop.set("quit")
    t.join(10)
    assert woke and not t.is_alive()
    assert stop.wait(30)  # stays set: later waits return at once


def _stubborn_grandchild(report: multiprocessing.queues.Queue[int]) -> None:
    child_setup("test")
    report.put(os.getpid())
    while True:  # a stage whose loop never looks at its flag
        time.sleep(1)


def _parent_of_a_stubborn_child(report: multiprocessing.queues.Queue[int]) -> None:
    p = multiprocessing.get_context("spawn").Process(target=_stubborn_grandchild, args=(report,))
    p.start()
    p.join()


def test_an_orphan_that_does_not_stop_is_ended_by_its_alarm() -> None:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    parent = ctx.Process(target=_parent_of_a_stubborn_child, args=(q,))
    parent.start()
    grandchild = q.get(timeout=30)
    time.sleep(0.2)
    parent.kill()  # SIGKILL: the grandchild gets SIGTERM from the kernel, and ignores it
    parent.join(10)
    deadline = time.monotonic() + ORPHAN_GRACE + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    gone = not _alive(grandchild)
    if not gone:
        os.kill(grandchild, signal.SIGKILL)
    assert gone, "the orphan outlived its alarm"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
