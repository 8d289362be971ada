"""What a control connection may do, sans-I/O: the relay's per-connection limits.

:class:`ControlLimits` is the operator's configuration; :class:`ConnectionPolicy`
applies it to one connection. Every method takes the time (monotonic seconds)
as an argument and returns a decision; the asyncio adapter
(:mod:`relay.control_server`) reads the clock, sends the errors and closes the
connections. No sockets, no clock, no logging here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_ERRORS = 16  # bad frames tolerated on one connection before it is closed
MAX_FAILED_RECONNECTS = 3  # reconnects with an unknown token before the connection is closed


@dataclass(slots=True)
class ControlLimits:
    auth_timeout: float = 10.0  # seconds a connection may take to send auth or reconnect
    max_output: int = 1024 * 1024  # bytes queued for a client that does not read: then drop it
    max_connections: int = 2000
    # Messages per second a connection may send, and the burst above that rate: a
    # join costs a route-table rebuild and a chat a message to every member, so a
    # flood of either must not take the loop (and the GIL) from everyone else.
    rate: float = 20.0
    burst: float = 40.0

    def admits(self, open_connections: int) -> bool:
        """Whether a new connection may be served while ``open_connections`` are."""
        return open_connections < self.max_connections


class Verdict(enum.Enum):
    """What the adapter does with a message, or after a bad one."""

    ACCEPT = "accept"  # handle the message
    REFUSE = "refuse"  # answer with an error; the connection goes on
    CLOSE = "close"  # answer with an error, then close the connection


class TokenBucket:
    """A token bucket: :meth:`allow` says whether one more message fits at time ``now``.

    It starts full: at most ``burst + rate * (now - start)`` calls are ever allowed.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now

    def allow(self, now: float) -> bool:
        """Take one token if there is one at ``now`` (not earlier than the last call)."""
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class ConnectionPolicy:
    """The limits of one control connection, opened at ``now``.

    Counts its bad frames and failed reconnects, meters its messages and knows
    its authentication deadline; each ``on_*`` method records one event and
    returns what the adapter should do about it.
    """

    __slots__ = ("auth_deadline", "bucket", "errors", "failed_reconnects", "limits")

    def __init__(self, limits: ControlLimits, now: float) -> None:
        self.limits = limits
        self.bucket = TokenBucket(limits.rate, limits.burst, now)
        self.auth_deadline = now + limits.auth_timeout  # monotonic time
        self.errors = 0
        self.failed_reconnects = 0

    def on_message(self, now: float) -> Verdict:
        """One message arrived at ``now``: ACCEPT it, or refuse it as over the rate.

        A refused message counts as a bad frame, so a flood is closed after
        :data:`MAX_ERRORS` like any other stream of garbage.
        """
        if self.bucket.allow(now):
            return Verdict.ACCEPT
        return self.on_bad_frame()

    def on_bad_frame(self) -> Verdict:
        """One message could not be used: REFUSE it, or CLOSE at the :data:`MAX_ERRORS`-th."""
        self.errors += 1
        return Verdict.CLOSE if self.errors >= MAX_ERRORS else Verdict.REFUSE

    def on_failed_reconnect(self) -> Verdict:
        """A reconnect named an unknown token: REFUSE, or CLOSE once there were too many.

        A client resumes with the one token it has, then sends auth: more misses on
        one connection are someone guessing tokens.
        """
        self.failed_reconnects += 1
        return Verdict.CLOSE if self.failed_reconnects > MAX_FAILED_RECONNECTS else Verdict.REFUSE

    def auth_overdue(self, now: float, authenticated: bool) -> bool:
        """Whether the connection is still without a session at its deadline: close it."""
        return not authenticated and now >= self.auth_deadline
