"""pipeline/ipc/scheduling.py: what an audio stage asks of the scheduler, and what it gets."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from typing import Any

import pytest

from pipeline.ipc import scheduling as sch

INF = -1


class FakeOs(types.SimpleNamespace):
    """sched_setscheduler, getpriority and setpriority, each allowed or refused."""

    def __init__(self, rt: bool = True, nice: bool = True, start_nice: int = 0) -> None:
        super().__init__(
            SCHED_RR=2, SCHED_RESET_ON_FORK=0x40000000, PRIO_PROCESS=0, rt=rt, nice_ok=nice,
            nice=start_nice, policy=None,
        )  # fmt: skip

    def sched_param(self, priority: int) -> Any:
        return types.SimpleNamespace(sched_priority=priority)

    def sched_setscheduler(self, pid: int, policy: int, param: Any) -> None:
        if not self.rt:
            raise PermissionError(1, "Operation not permitted")
        self.policy = (policy, param.sched_priority)

    def getpriority(self, which: int, who: int) -> int:
        return int(self.nice)

    def setpriority(self, which: int, who: int, value: int) -> None:
        if not self.nice_ok:
            raise PermissionError(13, "Permission denied")
        self.nice = value


class FakeLimits(types.SimpleNamespace):
    def __init__(self, soft: int = INF, hard: int = INF) -> None:
        super().__init__(RLIMIT_RTTIME=15, RLIM_INFINITY=INF, value=(soft, hard))

    def getrlimit(self, which: int) -> tuple[int, int]:
        return tuple(self.value)  # type: ignore[return-value]

    def setrlimit(self, which: int, value: tuple[int, int]) -> None:
        self.value = value


def test_realtime_when_allowed_with_a_cap_on_running_without_blocking() -> None:
    api, limits = FakeOs(), FakeLimits()
    got = sch.raise_priority(sch.REALTIME, api, limits)
    assert got.got == sch.REALTIME and not got.short
    assert got.words == f"realtime (SCHED_RR {sch.RT_PRIORITY})"
    assert api.policy == (api.SCHED_RR | api.SCHED_RESET_ON_FORK, sch.RT_PRIORITY)
    assert limits.value == (sch.RTTIME_US, 2 * sch.RTTIME_US)
    assert api.nice == 0  # not touched


def test_a_lower_rttime_hard_limit_is_kept() -> None:
    limits = FakeLimits(soft=100_000, hard=200_000)
    sch.raise_priority(sch.REALTIME, FakeOs(), limits)
    assert limits.value == (100_000, 200_000)


def test_realtime_refused_falls_back_to_a_higher_nice_and_says_why() -> None:
    api = FakeOs(rt=False)
    got = sch.raise_priority(sch.REALTIME, api, FakeLimits())
    assert got.got == sch.HIGH and got.short and api.nice == sch.HIGH_NICE
    assert got.detail.startswith(f"nice {sch.HIGH_NICE}; realtime not permitted: it needs")


def test_nothing_allowed_runs_as_it_is_and_says_so() -> None:
    got = sch.raise_priority(sch.REALTIME, FakeOs(rt=False, nice=False), FakeLimits())
    assert got.got == sch.NORMAL and got.short
    assert "realtime not permitted" in got.words and "higher priority not permitted" in got.words


def test_high_asks_only_for_nice_and_never_lowers_a_nicer_start() -> None:
    api = FakeOs(start_nice=-15)
    got = sch.raise_priority(sch.HIGH, api, FakeLimits())
    assert got.got == sch.HIGH and api.policy is None and api.nice == -15
    assert got.words == "high (nice -15)"


def test_normal_touches_nothing() -> None:
    api, limits = FakeOs(), FakeLimits()
    got = sch.raise_priority(sch.NORMAL, api, limits)
    assert got == sch.Scheduling(sch.NORMAL, sch.NORMAL, "") and not got.short
    assert api.policy is None and api.nice == 0 and limits.value == (INF, INF)


def test_an_unknown_choice_is_refused_in_words() -> None:
    with pytest.raises(ValueError, match="priority must be one of realtime, high, normal"):
        sch.raise_priority("turbo")


@pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="Linux scheduling calls")
def test_for_real_in_a_child_process() -> None:
    """The real calls, in a process of its own: what it got is what the kernel says it
    runs at, whichever of the three this machine allows."""
    code = (
        "import os, resource\n"
        "from pipeline.ipc import scheduling as s\n"
        "got = s.raise_priority(s.REALTIME)\n"
        "print(got.got, os.sched_getscheduler(0) & 0xff, os.getpriority(os.PRIO_PROCESS, 0),"
        " resource.getrlimit(resource.RLIMIT_RTTIME)[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    got, policy, nice, rttime = out[0], int(out[1]), int(out[2]), int(out[3])
    if got == sch.REALTIME:
        assert policy == os.SCHED_RR and rttime == sch.RTTIME_US
    elif got == sch.HIGH:
        assert policy == os.SCHED_OTHER and nice <= sch.HIGH_NICE
    else:
        assert policy == os.SCHED_OTHER
