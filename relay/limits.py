"""What a control connection may do, sans-I/O: the relay's per-connection and
per-address limits.

:class:`ControlLimits` is the operator's configuration; :class:`ConnectionPolicy`
applies it to one connection, :class:`AddressPolicy` to the connections of
each source address (how many are open, how fast new ones come) and
:class:`AddressRates` to what all the connections of an address send together
(chats and joins). Every method
takes the time (monotonic seconds) as an argument and returns a decision; the
asyncio adapter (:mod:`relay.control_server`) reads the clock, sends the errors
and closes the connections. No sockets, no clock, no logging here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_ERRORS = 16  # bad frames tolerated on one connection before it is closed
MAX_FAILED_RECONNECTS = 3  # reconnects with an unknown token before the connection is closed
# Per source address: a household or an office behind one NAT runs a handful of
# clients, each with one connection that reconnects every 2 s when it drops.
PER_ADDRESS_CONNECTIONS = 32
PER_ADDRESS_SESSIONS = 32
CONNECT_RATE = 16.0  # new connections per second from one address
CONNECT_BURST = 64.0
# What all the sessions of one address may send together, on top of each connection's
# own rate: people chat and change channels a few times a minute each, and a whole
# household that reconnects at once (a relay restart) joins its channels in one burst.
ADDRESS_CHAT_RATE = 8.0  # chat messages per second from one address
ADDRESS_CHAT_BURST = 32.0
ADDRESS_JOIN_RATE = 4.0  # channel joins per second from one address
ADDRESS_JOIN_BURST = 32.0
PRUNE_AT = 4096  # addresses remembered before the idle ones are forgotten


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
    # Per source address (0: no limit): open connections, sessions (those in grace
    # included; the session table enforces it), and new connections per second.
    per_address_connections: int = PER_ADDRESS_CONNECTIONS
    per_address_sessions: int = PER_ADDRESS_SESSIONS
    connect_rate: float = CONNECT_RATE
    connect_burst: float = CONNECT_BURST
    # Per source address (rate 0: no limit): chats and joins of all its connections.
    address_chat_rate: float = ADDRESS_CHAT_RATE
    address_chat_burst: float = ADDRESS_CHAT_BURST
    address_join_rate: float = ADDRESS_JOIN_RATE
    address_join_burst: float = ADDRESS_JOIN_BURST

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

    def level(self, now: float) -> float:
        """The tokens there would be at ``now``, without taking one."""
        return min(self.burst, self._tokens + (now - self._last) * self.rate)


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


class Admission(enum.Enum):
    """What :meth:`AddressPolicy.admit` says of a new connection; else the error code."""

    ADMIT = "admit"
    SERVER_FULL = "server_full"  # the relay has max_connections open
    ADDRESS_FULL = "too_many_connections"  # this address has per_address_connections open
    TOO_FAST = "connecting_too_fast"  # this address opens connections faster than connect_rate


class AddressBuckets:
    """One :class:`TokenBucket` per source address, with bounded memory.

    An address is given a full bucket the first time it is seen. Once more than
    :data:`PRUNE_AT` are remembered, those whose bucket has refilled are
    forgotten (they are as if never seen), then the oldest if that is not enough.
    """

    __slots__ = ("_buckets", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, addr: str, now: float) -> bool:
        """Take one token of ``addr``'s bucket at ``now`` if it holds one."""
        bucket = self._buckets.get(addr)
        if bucket is None:
            if len(self._buckets) >= PRUNE_AT:
                self._prune(now)
            bucket = self._buckets[addr] = TokenBucket(self.rate, self.burst, now)
        return bucket.allow(now)

    def set_rate(self, rate: float, burst: float) -> None:
        """New limits (a reload): every address starts again with a full bucket."""
        if (rate, burst) != (self.rate, self.burst):
            self.rate, self.burst = rate, burst
            self._buckets.clear()

    def _prune(self, now: float) -> None:
        full = [a for a, b in self._buckets.items() if b.level(now) >= b.burst]
        for addr in full:
            del self._buckets[addr]
        if len(self._buckets) >= PRUNE_AT // 2:  # that many busy addresses: forget the oldest
            for addr in list(self._buckets)[: len(self._buckets) - PRUNE_AT // 2]:
                del self._buckets[addr]


class AddressPolicy:
    """Open connections and the connection rate of every source address.

    :meth:`admit` counts an admitted connection as open until :meth:`release`.
    A refused one still spends a token of its address's bucket, so hammering
    does not buy anything; the buckets' memory is bounded (:class:`AddressBuckets`).
    """

    __slots__ = ("_buckets", "_open", "limits", "total")

    def __init__(self, limits: ControlLimits) -> None:
        self.limits = limits
        self.total = 0  # connections open, from every address
        self._open: dict[str, int] = {}
        self._buckets = AddressBuckets(limits.connect_rate, limits.connect_burst)

    def open_from(self, addr: str) -> int:
        return self._open.get(addr, 0)

    def admit(self, addr: str, now: float) -> Admission:
        """A connection from ``addr`` arrived at ``now``: may it be served?"""
        lim = self.limits
        if lim.connect_rate > 0:
            self._buckets.set_rate(lim.connect_rate, lim.connect_burst)  # a reload may change it
            if not self._buckets.allow(addr, now):
                return Admission.TOO_FAST
        if not lim.admits(self.total):
            return Admission.SERVER_FULL
        if lim.per_address_connections and self.open_from(addr) >= lim.per_address_connections:
            return Admission.ADDRESS_FULL
        self._open[addr] = self.open_from(addr) + 1
        self.total += 1
        return Admission.ADMIT

    def release(self, addr: str) -> None:
        """An admitted connection from ``addr`` closed."""
        left = self._open[addr] - 1
        if left:
            self._open[addr] = left
        else:
            del self._open[addr]
        self.total -= 1


class AddressRates:
    """The chats and joins of every source address, all its connections together.

    Each connection has its own message rate (:class:`ConnectionPolicy`); this
    caps what one address gets through however many connections it opens, so
    32 connections at their own limit cannot relay 32 times one user's chat or
    force 32 times one user's channel moves (each a presence event to everyone).
    A refused message is answered with ``address_rate_limited`` and does not count
    as a bad frame: the user next to the flooder behind the same NAT keeps its
    connection.
    """

    __slots__ = ("chat", "join", "limits")

    def __init__(self, limits: ControlLimits) -> None:
        self.limits = limits
        self.chat = AddressBuckets(limits.address_chat_rate, limits.address_chat_burst)
        self.join = AddressBuckets(limits.address_join_rate, limits.address_join_burst)

    def allow_chat(self, addr: str, now: float) -> bool:
        """One chat from ``addr`` at ``now``: may it be relayed?"""
        lim = self.limits
        if lim.address_chat_rate <= 0:
            return True
        self.chat.set_rate(lim.address_chat_rate, lim.address_chat_burst)
        return self.chat.allow(addr, now)

    def allow_join(self, addr: str, now: float) -> bool:
        """One channel join from ``addr`` at ``now``: may it be carried out?"""
        lim = self.limits
        if lim.address_join_rate <= 0:
            return True
        self.join.set_rate(lim.address_join_rate, lim.address_join_burst)
        return self.join.allow(addr, now)


# Password guessing, per source address, as mumble-server limits it: this many failed
# authentications within the window, then every auth from the address is refused
# for the ban (a right password included), then the count starts again.
AUTH_FAILURES = 10
AUTH_WINDOW = 120.0
AUTH_BAN = 300.0


class AuthGuard:
    """Failed password attempts of every source address, and which addresses are banned.

    :meth:`banned_for` says how long an address must still wait; :meth:`failed`
    records one wrong password and says whether that started a ban. Memory is
    bounded: failures older than the window are forgotten, and at most
    :data:`PRUNE_AT` addresses are remembered.
    """

    __slots__ = ("_bans", "_failures", "ban", "limit", "window")

    def __init__(
        self, limit: int = AUTH_FAILURES, window: float = AUTH_WINDOW, ban: float = AUTH_BAN
    ) -> None:
        self.limit = limit
        self.window = window
        self.ban = ban
        self._failures: dict[str, list[float]] = {}
        self._bans: dict[str, float] = {}  # address -> when its ban ends

    def banned_for(self, addr: str, now: float) -> float:
        """Seconds until ``addr`` may try again; 0 when it may now."""
        until = self._bans.get(addr)
        if until is None:
            return 0.0
        if now >= until:
            del self._bans[addr]
            return 0.0
        return until - now

    def failed(self, addr: str, now: float) -> bool:
        """One wrong password from ``addr`` at ``now``; True if the address is now banned."""
        times = [t for t in self._failures.get(addr, ()) if now - t < self.window]
        times.append(now)
        if len(times) >= self.limit:
            self._failures.pop(addr, None)
            self._bans[addr] = now + self.ban
            return True
        if addr not in self._failures and len(self._failures) >= PRUNE_AT:
            self._prune(now)
        self._failures[addr] = times
        return False

    def _prune(self, now: float) -> None:
        stale = [a for a, ts in self._failures.items() if now - ts[-1] >= self.window]
        for addr in stale:
            del self._failures[addr]
        for addr in list(self._failures)[: max(0, len(self._failures) - PRUNE_AT // 2)]:
            del self._failures[addr]
        for addr in [a for a, until in self._bans.items() if now >= until]:
            del self._bans[addr]
