"""pipeline/ipc/child_process.py: the stop flag every child loop honours, and its parent watch."""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import os
import signal
import time

from pipeline.ipc.child_process import StopFlag, child_setup


def test_stop_flag_keeps_the_first_reason() -> None:
    stop = StopFlag(os.getppid())
    assert not stop and not stop.check_parent()
    stop.set("quit")
    stop.set("terminated")
    assert stop and stop.reason == "quit" and stop.wait(0)


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
