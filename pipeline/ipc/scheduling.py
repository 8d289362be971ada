"""How the client's audio processes ask the kernel to run them: before ordinary programs.

A stage on the audio path sleeps most of every 20 ms and must run the moment it is
woken: the decode stage has a few ms to mix the next frame before the speaker wants
it, the capture stage's callback must take the microphone's block before the next.
At normal priority, a busy program on a 2-core machine (a browser, a build) shares
the CPU with them as an equal. So each audio stage asks, by default (:data:`HIGH`),
for nice :data:`HIGH_NICE`: well above ordinary programs, and just below the sound
server's own threads (PulseAudio's main thread runs at nice -11 and its I/O thread
SCHED_RR 5), which must run before the client they feed.

:data:`REALTIME` asks for round-robin real-time scheduling at :data:`RT_PRIORITY`
instead (below the sound server's I/O thread, above its main thread), falling back
to the nice. Measured through PulseAudio with one core busy 30 ms of every 80
(``bench/device_path.py --priority normal,high,realtime --cpu-load``), it wakes the
decode stage later least (p99 1.2-2.5 ms against 1.9-3.3 for high and 2.2-4.0 at
normal) but gave no lower mouth-to-ear than high, and the only holes (8 ms, in one of
four calls, with no late frame of ours and no stall of the server): ahead of the
server's main thread, a client can hold up the server. Hence high by default.

A real-time thread that never blocks would hold a core (the kernel keeps 5 % of each
second for the rest, ``sched_rt_runtime_us``): :data:`RTTIME_US` caps how long an
audio stage may run without blocking before the kernel sends it SIGXCPU (its
default action ends the process, and the supervisor starts the stage again).
``SCHED_RESET_ON_FORK``: nothing a stage starts inherits it. Threads the process
starts afterwards do inherit either choice (PortAudio's callback thread, ZeroMQ's
I/O thread), which is why this runs first. Refused (no ``RLIMIT_NICE`` or
``RLIMIT_RTPRIO``, as for most users outside an audio group), a stage runs as it
is and says so in words.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from typing import Any

REALTIME = "realtime"  # SCHED_RR, else a higher nice, else as it is
HIGH = "high"  # a higher nice (the default), else as it is
NORMAL = "normal"  # as started
CHOICES = (REALTIME, HIGH, NORMAL)  # most first

RT_PRIORITY = 3  # of 1..99; PulseAudio's I/O thread runs at 5
HIGH_NICE = -10  # what "high" (and realtime's fallback) asks for
RTTIME_US = 500_000  # CPU time without blocking before SIGXCPU (the hard limit: twice it)
RT_NEEDS = (
    "it needs an rtprio limit (/etc/security/limits.d, e.g. the audio group's) or CAP_SYS_NICE"
)
NICE_NEEDS = "it needs a nice limit or CAP_SYS_NICE"


@dataclass(frozen=True, slots=True)
class Scheduling:
    """What a process asked for and what it got, in words for the status line."""

    asked: str
    got: str  # REALTIME, HIGH or NORMAL
    detail: str  # e.g. "SCHED_RR 3", "nice -10", "realtime not permitted: ..."

    @property
    def short(self) -> bool:
        """It got less than it asked for."""
        return CHOICES.index(self.got) > CHOICES.index(self.asked)

    @property
    def words(self) -> str:
        return f"{self.got} ({self.detail})" if self.detail else self.got


def check(choice: str) -> str:
    """``choice`` if it is one of :data:`CHOICES`; ValueError in words otherwise."""
    if choice not in CHOICES:
        raise ValueError(f"priority must be one of {', '.join(CHOICES)}, got {choice!r}")
    return choice


def raise_priority(asked: str, api: Any = os, limits: Any = resource) -> Scheduling:
    """Ask for ``asked`` (one of :data:`CHOICES`) for the calling thread and the threads
    and processes it starts from now on; ``api`` and ``limits`` stand in for :mod:`os`
    and :mod:`resource` in tests. Never raises for a refusal: it is in the answer."""
    check(asked)
    if asked == NORMAL:
        return Scheduling(asked, NORMAL, "")
    refused: list[str] = []
    if asked == REALTIME:
        try:
            _cap_rttime(limits)
            policy = api.SCHED_RR | getattr(api, "SCHED_RESET_ON_FORK", 0)
            api.sched_setscheduler(0, policy, api.sched_param(RT_PRIORITY))
            return Scheduling(asked, REALTIME, f"SCHED_RR {RT_PRIORITY}")
        except (OSError, AttributeError, ValueError) as exc:
            refused.append(f"realtime not permitted: {_reason(exc, RT_NEEDS)}")
    try:
        now = api.getpriority(api.PRIO_PROCESS, 0)
        if now > HIGH_NICE:
            api.setpriority(api.PRIO_PROCESS, 0, HIGH_NICE)
        refused_text = f"; {refused[0]}" if refused else ""
        return Scheduling(asked, HIGH, f"nice {min(now, HIGH_NICE)}{refused_text}")
    except (OSError, AttributeError) as exc:
        refused.append(f"higher priority not permitted: {_reason(exc, NICE_NEEDS)}")
    return Scheduling(asked, NORMAL, "; ".join(refused))


def _cap_rttime(limits: Any) -> None:
    soft, hard = limits.getrlimit(limits.RLIMIT_RTTIME)
    infinity = limits.RLIM_INFINITY
    want_hard = 2 * RTTIME_US if hard == infinity else min(hard, 2 * RTTIME_US)
    want_soft = min(RTTIME_US, want_hard)
    if soft == infinity or soft > want_soft or hard != want_hard:
        limits.setrlimit(limits.RLIMIT_RTTIME, (want_soft, want_hard))


def _reason(exc: BaseException, needs: str) -> str:
    return needs if isinstance(exc, PermissionError) else (str(exc) or type(exc).__name__)
