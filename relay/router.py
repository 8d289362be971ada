"""The per-datagram routing decision and its counters, sans-I/O and fast.

:meth:`Router.route` looks at one received datagram (a preallocated buffer, its
length and the source address) and returns the addresses to send it to; for
voice it rewrites the token field in place to the speaker's public user id, so
the adapter sends the very same buffer to every destination. The cost of one
voice datagram is one dict lookup, one address comparison and the 4-byte
rewrite: the destination tuples are precomputed per sender in an immutable
:class:`RouteTable` that the control side rebuilds on every membership or
binding change and swaps in with one attribute store.

Each sender also has a :class:`VoiceLimit`: a token bucket for datagrams and one
for bytes, so one member flooding the relay cannot take the forwarding loop
from everyone else (issue 18: one sender at 133k datagrams/s cost the others
3-37 % of their voice). The excess is dropped before any fan-out, which is where
the cost is: a refused datagram costs a clock read and a few float operations,
a forwarded one a ``sendto`` per listener.

Thread ownership: ``Router.table`` is written only by the control thread (one
atomic reference swap of an immutable value); everything else here, counters
and each route's :class:`Bucket` included, is written only by the thread that
calls :meth:`Router.route`. The control thread creates a bucket with a session's
first route and hands the same object on to every later table, never touching
its fields. Other threads may read the counters (plain ints; a stale read is
harmless).
"""

from __future__ import annotations

import math
import struct
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, fields

from relay.protocol.datagram import HEADER_SIZE, MAX_DATAGRAM, TARGET_OFFSET

Addr = tuple[str, int]
Dests = tuple[Addr, ...]

_U32 = struct.Struct(">I")
NOWHERE: Dests = ()
# The receive buffer holds one byte more than the largest datagram, so an
# oversized one shows up as a length of RECV_SIZE instead of passing truncated.
RECV_SIZE = MAX_DATAGRAM + 1

# One Opus stream at its highest bitrate, as SPEC.md sends it: one packet per 20 ms
# frame (50/s) of at most 1,275 bytes (510 kb/s) behind the 24-byte header, 64,950
# bytes/s, plus a register ping every 2 s. The defaults leave 20 % more datagrams and
# 11 % more bytes (so each limit is the one that binds in its own case: a flood of
# small datagrams is held to 60/s, one of the largest to 55/s), and a burst of one
# second of either for a sender whose packets leave in clumps (a GIL hand-off, a
# Wi-Fi retry, a capture hiccup).
DEFAULT_DATAGRAMS_PER_S = 60.0
DEFAULT_BYTES_PER_S = 72_000.0
DEFAULT_BURST_S = 1.0


@dataclass(slots=True, frozen=True)
class VoiceLimit:
    """What one session may send through the relay: two token buckets.

    Each refills at its rate and holds at most ``burst_s`` seconds of it; a
    datagram passes if both buckets hold one datagram and its length in bytes.
    """

    datagrams_per_s: float = DEFAULT_DATAGRAMS_PER_S
    bytes_per_s: float = DEFAULT_BYTES_PER_S
    burst_s: float = DEFAULT_BURST_S

    def __post_init__(self) -> None:
        for name in ("datagrams_per_s", "bytes_per_s", "burst_s"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"voice limit {name} must be a positive number, not {value}")
        if (
            self.datagrams_per_s * self.burst_s < 1
            or self.bytes_per_s * self.burst_s < MAX_DATAGRAM
        ):
            raise ValueError("a voice limit's burst must hold at least one largest datagram")


class Bucket:
    """One sender's two token buckets, kept as the GCRA keeps them (ATM's "virtual
    scheduling" form): per limit, the time its bucket will next be empty of
    what was taken, rather than a level and a time. The same decisions, with one
    value per limit and no refill to compute: cheaper on the hot path.

    The routing thread's mutable state for one sender. Starts at minus infinity:
    the first datagram finds both buckets full.
    """

    __slots__ = ("bytes_until", "datagrams_until")

    def __init__(self) -> None:
        self.datagrams_until = -math.inf
        self.bytes_until = -math.inf

    def take(
        self, now: float, n: int, s_per_datagram: float, s_per_byte: float, burst_s: float
    ) -> bool:
        """Take one datagram of ``n`` bytes at ``now`` if both limits allow it.

        Each bucket is empty until ``*_until``; taking moves that on by the datagram's
        cost in seconds, and it passes if neither ends up more than the burst ahead of
        now. Plain float arithmetic: it runs for every datagram a limited sender sends."""
        d = self.datagrams_until
        if d < now:
            d = now
        d += s_per_datagram
        v = self.bytes_until
        if v < now:
            v = now
        v += n * s_per_byte
        now += burst_s
        if d > now or v > now:
            return False
        self.datagrams_until = d
        self.bytes_until = v
        return True


@dataclass(slots=True, frozen=True)
class Route:
    """What the relay needs about one sender: all precomputed."""

    user_id: bytes  # the public id, already packed as the 4 bytes that replace the token
    addr: Addr | None  # the bound UDP address, None before the first register ping
    dests: Dests  # every other bound member of the sender's channel
    echo: Dests  # (addr,) or ()
    # Carried from table to table for the session's whole life, so a join or a rebind
    # does not refill it; left out of comparisons (tables compare by routing alone).
    bucket: Bucket = field(default_factory=Bucket, compare=False)
    # The TCP tunnel (protocol 2, SPEC.md): the tokens of the other members who hear
    # through their control connection (never in ``dests``), and whether this session does.
    tunnels: tuple[int, ...] = ()
    tunnelled: bool = False
    # The operator muted this session (SPEC.md, user_state.server_muted): its voice goes
    # nowhere, whisper included; its pings are still answered, and it still hears.
    silenced: bool = False


@dataclass(slots=True, frozen=True)
class RouteTable:
    """An immutable snapshot of the session table, shaped for the hot path."""

    routes: dict[int, Route]  # token -> route
    whisper: dict[int, Dests]  # user id -> (bound address,)
    user_of: dict[int, int]  # token -> user id, to refuse whispering to oneself
    members: dict[str, tuple[int, ...]]  # channel -> tokens, to update a channel alone
    # user id -> token of each session that hears through its control connection
    tunnel_of: dict[int, int] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        entries: Iterable[tuple[int, int, str, Addr | None]],
        tunnelled: AbstractSet[int] = frozenset(),
        silenced: AbstractSet[int] = frozenset(),
    ) -> RouteTable:
        """From ``(token, user_id, channel, udp_addr)`` of every session."""
        entries = list(entries)
        return cls.update(EMPTY_TABLE, {e[2] for e in entries}, entries, tunnelled, silenced)

    @classmethod
    def update(
        cls,
        prev: RouteTable,
        channels: set[str],
        entries: Iterable[tuple[int, int, str, Addr | None]],
        tunnelled: AbstractSet[int] = frozenset(),
        silenced: AbstractSet[int] = frozenset(),
    ) -> RouteTable:
        """``prev`` with ``channels`` replaced by ``entries`` (every session now in them).

        ``tunnelled``: the tokens of the sessions that hear through their control
        connection (the TCP tunnel); they get voice through ``Route.tunnels`` and
        ``tunnel_of``, never at their UDP address. ``silenced``: the tokens of the sessions
        the operator muted, whose voice goes nowhere. Costs the size of those channels
        plus a copy of the dicts, not a rebuild of every route: a join on a full
        server stays cheap. No channels: ``prev``.
        """
        if not channels:
            return prev
        routes = dict(prev.routes)
        whisper = dict(prev.whisper)
        user_of = dict(prev.user_of)
        tunnel_of = dict(prev.tunnel_of)
        members = {c: m for c, m in prev.members.items() if c not in channels}
        for channel in channels:
            for token in prev.members.get(channel, ()):
                del routes[token]
                uid = user_of.pop(token)
                whisper.pop(uid, None)
                tunnel_of.pop(uid, None)
        by_channel: dict[str, list[tuple[int, int, Addr | None]]] = defaultdict(list)
        for token, uid, channel, addr in entries:
            assert channel in channels, "entries must lie in the channels being replaced"
            by_channel[channel].append((token, uid, addr))
        for channel, sessions in by_channel.items():
            bound: list[Addr] = []
            tunnels: list[int] = []
            for token, _uid, addr in sessions:
                if token in tunnelled:
                    tunnels.append(token)
                elif addr is not None and addr not in bound:
                    bound.append(addr)
            for token, uid, addr in sessions:
                # Two sessions may share an address (a stale one in grace from the same
                # client): never send a speaker its own voice, never send twice.
                dests = tuple(a for a in bound if a != addr)
                echo = NOWHERE if addr is None else (addr,)
                old = prev.routes.get(token)
                bucket = Bucket() if old is None else old.bucket
                tunnel = token in tunnelled
                others = tuple(t for t in tunnels if t != token) if tunnels else ()
                routes[token] = Route(
                    _U32.pack(uid), addr, dests, echo, bucket, others, tunnel, token in silenced
                )
                user_of[token] = uid
                if tunnel:
                    tunnel_of[uid] = token
                elif addr is not None:
                    whisper[uid] = echo
            members[channel] = tuple(token for token, _uid, _addr in sessions)
        return cls(routes, whisper, user_of, members, tunnel_of)


EMPTY_TABLE = RouteTable({}, {}, {}, {})


def add_unbound(prev: RouteTable, sessions: Iterable[tuple[int, int, str]]) -> RouteTable:
    """``prev`` plus new sessions ``(token, user_id, channel)`` that have no UDP address yet.

    Equal to a rebuild of their channels (:meth:`RouteTable.update`) at the cost of
    a dict copy: an unbound session changes no one else's destinations, and its own
    are every bound address of its channel, which an existing member's route
    already holds. This keeps an auth's cost flat as the default channel fills.
    """
    routes = dict(prev.routes)
    user_of = dict(prev.user_of)
    members = dict(prev.members)
    for token, uid, channel in sessions:
        others = members.get(channel, ())
        dests, tunnels = _heard_in(routes, others)
        routes[token] = Route(_U32.pack(uid), None, dests, NOWHERE, tunnels=tunnels)
        user_of[token] = uid
        members[channel] = (*others, token)
    return RouteTable(routes, prev.whisper, user_of, members, prev.tunnel_of)


def _heard_in(routes: dict[int, Route], members: tuple[int, ...]) -> tuple[Dests, tuple[int, ...]]:
    """Where an unbound newcomer to a channel of ``members`` sends: every bound UDP
    address there and every tunnelled token, read off one member's route.

    A route's ``dests`` leave out its own address. A member on UDP is a listener
    there, so its address is put back. A tunnelled member's address may be a
    listener's too (a member on UDP may share it: two sessions of one client), which
    its route cannot tell, so such a member is passed over; if every member is one,
    none is on UDP. It reads at most one route more than the tunnelled members with an
    address that come first in ``members``."""
    for t in members:
        r = routes[t]
        if not r.tunnelled:
            return (r.dests if r.addr is None else (*r.dests, r.addr)), r.tunnels
        if r.addr is None:
            return r.dests, (*r.tunnels, t)
    return NOWHERE, members


def remove_unbound(prev: RouteTable, sessions: Iterable[tuple[int, str]]) -> RouteTable:
    """``prev`` without sessions ``(token, channel)`` that never had a UDP address (nor
    the tunnel).

    Equal to a rebuild of their channels at the cost of a dict copy: no one's
    destinations (nor tunnels) hold such a session, and it has no whisper entry. Tokens the
    table does not hold are skipped. This keeps a leave's cost flat as a channel fills
    (a session that authenticates, looks and leaves, as a probe or a scanner does).
    """
    routes = dict(prev.routes)
    user_of = dict(prev.user_of)
    members = dict(prev.members)
    for token, channel in sessions:
        route = routes.pop(token, None)
        if route is None:
            continue
        assert route.addr is None and not route.tunnelled, "for sessions with no way in"
        user_of.pop(token, None)
        others = members.get(channel, ())
        if token in others:
            rest = list(others)
            rest.remove(token)
            if rest:
                members[channel] = tuple(rest)
            else:  # as a rebuild leaves it: only channels with sessions are listed
                del members[channel]
    return RouteTable(routes, prev.whisper, user_of, members, prev.tunnel_of)


@dataclass(slots=True)
class Counters:
    """Datagrams by outcome: each received one counts once in ``keepalive``, ``register``,
    ``voice_in`` (voice accepted for routing) or a ``drop_*``. ``forwarded`` and
    ``echoed`` count datagrams sent, one per destination."""

    voice_in: int = 0
    forwarded: int = 0
    echoed: int = 0
    keepalive: int = 0
    register: int = 0
    drop_short: int = 0
    drop_long: int = 0
    drop_unknown_token: int = 0
    drop_unbound: int = 0
    drop_spoofed: int = 0
    drop_bad_target: int = 0
    drop_rebind_limited: int = 0  # a bound session moving address again within a second
    drop_voice_limited: int = 0  # over the sender's VoiceLimit: refused before any fan-out
    drop_server_muted: int = 0  # voice of a session the operator muted
    send_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.as_dict().items())


class Router:
    """Decides, per datagram, where it goes; counts every outcome."""

    __slots__ = (
        "_burst_s",
        "_s_per_byte",
        "_s_per_datagram",
        "clock",
        "counters",
        "echo",
        "limit",
        "on_bind",
        "table",
    )

    def __init__(
        self,
        echo: bool = False,
        on_bind: Callable[[int, Addr, bytes], None] | None = None,
        limit: VoiceLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.echo = echo
        # Called (from the routing thread) with (token, address, the 24-byte ping)
        # when a register ping comes from an address its token is not bound to: the
        # owner of the session table binds it and sends the ping back.
        self.on_bind = on_bind
        self.table = EMPTY_TABLE
        self.counters = Counters()
        # None: no limit. The clock is injected rather than the time passed in, so only
        # datagrams that passed the token and address checks pay for reading it.
        self.limit = limit
        self.clock = clock
        # Unpacked once: the hot path reads plain floats off the router.
        lim = limit or VoiceLimit()
        self._s_per_datagram = 1.0 / lim.datagrams_per_s
        self._s_per_byte = 1.0 / lim.bytes_per_s
        self._burst_s = lim.burst_s

    def set_limit(self, limit: VoiceLimit | None) -> None:
        """A new limit (a reload), from the control thread: each value is one attribute
        store, so the routing thread sees the old limit or the new one per field, for at
        most one datagram in between; every bucket keeps its state."""
        lim = limit or VoiceLimit()
        self._s_per_datagram = 1.0 / lim.datagrams_per_s
        self._s_per_byte = 1.0 / lim.bytes_per_s
        self._burst_s = lim.burst_s
        self.limit = limit

    def route(self, buf: bytearray, n: int, addr: Addr) -> Dests:
        """Where ``buf[:n]``, received from ``addr``, goes; may rewrite its token in place.

        Register pings go back to the sender unchanged (from a new address they go
        to ``on_bind`` instead, which binds and answers); voice goes to the
        sender's channel or whisper target with the token replaced by the sender's
        user id; in echo mode voice goes back unchanged. What a session sends from
        its bound address beyond its :class:`VoiceLimit` (pings included: each
        answer is a send too) is dropped. Everything else returns ``()`` and is
        counted by reason.
        """
        c = self.counters
        if n == 0:
            c.keepalive += 1
            return NOWHERE
        if n < HEADER_SIZE:
            c.drop_short += 1
            return NOWHERE
        if n > MAX_DATAGRAM:
            c.drop_long += 1
            return NOWHERE
        token = _U32.unpack_from(buf)[0]
        table = self.table
        route = table.routes.get(token)
        if route is None:
            c.drop_unknown_token += 1
            return NOWHERE
        if route.addr != addr:
            if n == HEADER_SIZE:
                # A new address: the table's owner binds it, then answers the ping, so
                # an answer always means voice from this address will be routed.
                c.register += 1
                if self.on_bind is not None:
                    self.on_bind(token, addr, bytes(buf[:HEADER_SIZE]))
            elif route.addr is None:
                c.drop_unbound += 1
            else:
                c.drop_spoofed += 1
            return NOWHERE
        if self.limit is not None and not route.bucket.take(
            self.clock(), n, self._s_per_datagram, self._s_per_byte, self._burst_s
        ):
            c.drop_voice_limited += 1
            return NOWHERE
        if n == HEADER_SIZE:
            c.register += 1
            return route.echo
        if route.silenced:
            c.drop_server_muted += 1
            return NOWHERE
        if self.echo:
            c.voice_in += 1
            c.echoed += 1
            return route.echo
        target = _U32.unpack_from(buf, TARGET_OFFSET)[0]
        if target:
            dests = table.whisper.get(target, NOWHERE)
            if not dests or target == table.user_of[token]:
                c.drop_bad_target += 1
                return NOWHERE
        else:
            dests = route.dests
        buf[0:4] = route.user_id
        c.voice_in += 1
        c.forwarded += len(dests)
        return dests
