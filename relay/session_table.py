"""The relay's session and channel table, sans-I/O.

A session is what ``auth`` creates: a secret token, a public user id, a name, a
channel and, once the client has sent a UDP register ping, the address its voice
comes from. Control connections are known here only by an integer id that the
TCP adapter hands in; every method takes the time as an argument and returns the
actions to carry out (messages to send, connections to close). No sockets, no
clock, no logging: the control adapter owns all of that.

Thread ownership: one thread (the asyncio loop) calls every method. The UDP loop
never touches this table; it reads the immutable snapshot that
:meth:`SessionTable.route_entries` feeds to the router.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from relay.names import NameBook, NameRefused, clean_chat
from relay.protocol.messages import (
    Chat,
    Error,
    Message,
    UserInfo,
    UserJoined,
    UserLeft,
    Welcome,
    fits_in_frame,
)
from relay.protocol.widths import U32_MAX

Addr = tuple[str, int]

DEFAULT_CHANNELS = ("Lobby", "General", "Gaming", "Music", "AFK")
DEFAULT_GRACE = 30.0
# Seconds a bound session must wait before moving its voice to another address: a
# move rebuilds the channel's routes, which a NAT rebinding needs rarely and a client
# flapping between source ports must not get on every ping.
REBIND_INTERVAL = 1.0


@dataclass(slots=True, frozen=True)
class Send:
    """Send ``message`` on control connection ``conn``."""

    conn: int
    message: Message


@dataclass(slots=True, frozen=True)
class Close:
    """Close control connection ``conn`` once what was queued for it is written."""

    conn: int
    reason: str


Action = Send | Close


class BindResult(enum.Enum):
    """What :meth:`SessionTable.bind_udp` did with a register ping."""

    BOUND = "bound"  # the address is new for this session: routes must be rebuilt
    UNCHANGED = "unchanged"  # already bound there: nothing to rebuild, the ping is answered
    RATE_LIMITED = "rate_limited"  # a move within REBIND_INTERVAL of the last: ignored
    UNKNOWN_TOKEN = "unknown_token"  # no such session (it ended between the ping and now)


@dataclass(slots=True)
class Session:
    token: int
    user_id: int
    name: str
    channel: str
    conn: int | None  # the control connection, None while the session waits out its grace
    udp_addr: Addr | None = None
    dropped_at: float | None = None  # monotonic time of the TCP drop
    bound_at: float | None = None  # monotonic time udp_addr last changed

    def info(self) -> UserInfo:
        return UserInfo(self.user_id, self.name, self.channel)


def _error(conn: int, code: str, message: str) -> Send:
    return Send(conn, Error(code=code, message=message))


class SessionTable:
    """Sessions by token, by connection and by channel; every mutation returns actions.

    Invariants (checked by :meth:`check`): every session is in exactly the
    channel it names; a connection has at most one session; tokens are non-zero
    and unique; names are unique; user ids are unique and never reused.
    """

    def __init__(
        self,
        channels: Iterable[str] = DEFAULT_CHANNELS,
        grace: float = DEFAULT_GRACE,
        udp_port: int = 0,
        max_sessions: int = 2000,
        rebind_interval: float = REBIND_INTERVAL,
    ) -> None:
        names = list(dict.fromkeys(channels))
        if not names:
            raise ValueError("a relay needs at least one channel")
        self.channels: dict[str, set[int]] = {c: set() for c in names}  # channel -> tokens
        self.default_channel = names[0]
        self.grace = grace
        self.udp_port = udp_port
        self.max_sessions = max_sessions
        self.rebind_interval = rebind_interval
        self._by_token: dict[int, Session] = {}
        self._by_conn: dict[int, int] = {}  # control connection -> token
        self._names = NameBook()  # by TR39 skeleton: look-alikes count as taken
        self._next_user_id = 1
        self.version = 0  # bumped whenever the routing view (members, bindings) changes
        self._dirty: set[str] = set()  # channels whose routing changed since take_dirty()

    # --- queries ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_token)

    def __iter__(self) -> Iterator[Session]:
        return iter(self._by_token.values())

    def by_conn(self, conn: int) -> Session | None:
        token = self._by_conn.get(conn)
        return None if token is None else self._by_token[token]

    def by_token(self, token: int) -> Session | None:
        return self._by_token.get(token)

    def connections(self) -> list[int]:
        return list(self._by_conn)

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has work to do, or None."""
        dropped = [s.dropped_at for s in self._by_token.values() if s.dropped_at is not None]
        return min(dropped) + self.grace if dropped else None

    def route_entries(
        self, channels: Iterable[str] | None = None
    ) -> list[tuple[int, int, str, Addr | None]]:
        """(token, user_id, channel, udp_addr) of each session (in ``channels``), for the router."""
        if channels is None:
            sessions: Iterable[Session] = self._by_token.values()
        else:
            sessions = (self._by_token[t] for c in channels for t in self.channels[c])
        return [(s.token, s.user_id, s.channel, s.udp_addr) for s in sessions]

    def take_dirty(self) -> set[str]:
        """The channels whose members or bindings changed since the last call."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    # --- control messages --------------------------------------------------------

    def auth(self, conn: int, name: str) -> list[Action]:
        """Create a session for ``conn``; reply welcome, announce it to the channel."""
        if conn in self._by_conn:
            return [_error(conn, "already_authenticated", "this connection has a session")]
        if len(self._by_token) >= self.max_sessions:
            # Sessions in grace count too: auth-and-drop cannot grow the table without bound.
            return [_error(conn, "server_full", "the relay has no room for another session")]
        try:
            name = self._names.claim(name)
        except NameRefused as exc:
            return [_error(conn, exc.code, str(exc))]
        token = self._new_token()
        user_id = self._next_user_id
        self._next_user_id += 1
        session = Session(token, user_id, name, self.default_channel, conn)
        self._by_token[token] = session
        self._by_conn[conn] = token
        out: list[Action] = [Send(conn, self._welcome(session))]
        out += self._to_all(UserJoined(user_id, name, session.channel), but=conn)
        self.channels[session.channel].add(token)
        self._changed(session.channel)
        return out

    def reconnect(self, conn: int, token: int, now: float) -> list[Action]:
        """Resume the session of ``token`` on ``conn``, without presence churn."""
        out: list[Action] = self.expire(now)
        if conn in self._by_conn:
            return [*out, _error(conn, "already_authenticated", "this connection has a session")]
        session = self._by_token.get(token)
        if session is None:
            return [*out, _error(conn, "unknown_token", "no session with this token; send auth")]
        if session.conn is not None:
            # The old connection is dead but not yet noticed (a half-open TCP): the
            # token is the credential, so its holder takes the session over.
            del self._by_conn[session.conn]
            out.append(Close(session.conn, "session resumed on another connection"))
        session.conn = conn
        session.dropped_at = None
        self._by_conn[conn] = token
        out.append(Send(conn, self._welcome(session)))
        return out

    def join(self, conn: int, channel: str) -> list[Action]:
        """Move the session of ``conn`` to ``channel``.

        Everyone on the server (mover included) gets ``user_left`` for the old channel
        and then ``user_joined`` for the new one: presence is server-wide, as in Mumble,
        so every client's channel tree stays whole (SPEC names the old and the new
        channel as recipients; the rest of the server is told too).
        """
        session = self.by_conn(conn)
        if session is None:
            return [_error(conn, "not_authenticated", "send auth or reconnect first")]
        if channel not in self.channels:
            return [_error(conn, "unknown_channel", f"no channel {channel[:64]!r}")]
        if channel == session.channel:
            return []
        old = session.channel
        out = self._to_all(UserLeft(session.user_id, session.name, old))
        self.channels[old].discard(session.token)
        session.channel = channel
        self.channels[channel].add(session.token)
        out += self._to_all(UserJoined(session.user_id, session.name, channel))
        self._changed(old, channel)
        return out

    def chat(self, conn: int, text: str, ts: float) -> list[Action]:
        """Relay ``text`` to the sender's channel, sender included, stamped with ``ts``."""
        session = self.by_conn(conn)
        if session is None:
            return [_error(conn, "not_authenticated", "send auth or reconnect first")]
        text = clean_chat(text)  # no bidi overrides or invisible characters on others' screens
        if not text.strip():
            return [_error(conn, "bad_message", "chat text is empty once cleaned")]
        msg = Chat(text, session.user_id, session.name, session.channel, ts)
        return self._to_channel(session.channel, msg)

    def bye(self, conn: int) -> list[Action]:
        """A clean leave: remove the session now and announce it."""
        session = self.by_conn(conn)
        out: list[Action] = [] if session is None else self._remove(session)
        out.append(Close(conn, "bye"))
        return out

    def drop(self, conn: int, now: float) -> list[Action]:
        """The TCP connection went away: keep its session for the grace period."""
        token = self._by_conn.pop(conn, None)
        if token is not None:
            session = self._by_token[token]
            session.conn = None
            session.dropped_at = now
        return []

    def expire(self, now: float) -> list[Action]:
        """Remove every session whose grace period is over; announce each."""
        out: list[Action] = []
        for session in list(self._by_token.values()):
            if session.dropped_at is not None and now - session.dropped_at >= self.grace:
                out += self._remove(session)
        return out

    # --- UDP --------------------------------------------------------------------------

    def bind_udp(self, token: int, addr: Addr, now: float) -> BindResult:
        """Bind ``token``'s voice to ``addr`` (a register ping received at ``now``).

        A first binding is always taken; a move to another address only if the
        session's address last changed at least ``rebind_interval`` before ``now``.
        Only :attr:`BindResult.BOUND` changes the routing view (and ``version``).
        """
        session = self._by_token.get(token)
        if session is None:
            return BindResult.UNKNOWN_TOKEN
        if session.udp_addr == addr:
            return BindResult.UNCHANGED
        # bound_at is set exactly when an address is: a first binding is never limited.
        if session.bound_at is not None and now - session.bound_at < self.rebind_interval:
            return BindResult.RATE_LIMITED
        session.udp_addr = addr
        session.bound_at = now
        self._changed(session.channel)
        return BindResult.BOUND

    # --- helpers ------------------------------------------------------------------------

    def _welcome(self, session: Session) -> Welcome:
        """The snapshot: every user, those of the session's channel first.

        A full server's snapshot can outgrow one frame (2,000 users with long
        names and channels): then the list is cut to what fits, so the users the
        client will hear are always in it.
        """
        users = sorted(
            (s.info() for s in self._by_token.values()),
            key=lambda u: (u.channel != session.channel, u.user_id),
        )

        def build(n: int) -> Welcome:
            return Welcome(
                token=session.token,
                user_id=session.user_id,
                udp_port=self.udp_port,
                channel=session.channel,
                channels=list(self.channels),
                users=users[:n],
            )

        if fits_in_frame(build(len(users))):
            return build(len(users))
        lo, hi = 0, len(users)  # the largest n that fits is in [lo, hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits_in_frame(build(mid)) else (lo, mid)
        return build(lo)

    def _to_all(self, message: Message, but: int | None = None) -> list[Action]:
        """``message`` to every connected session (presence), except connection ``but``."""
        return [
            Send(s.conn, message)
            for s in self._by_token.values()
            if s.conn is not None and s.conn != but
        ]

    def _to_channel(self, channel: str, message: Message) -> list[Action]:
        out: list[Action] = []
        for token in self.channels[channel]:
            conn = self._by_token[token].conn
            if conn is not None:
                out.append(Send(conn, message))
        return out

    def _remove(self, session: Session) -> list[Action]:
        del self._by_token[session.token]
        if session.conn is not None:
            del self._by_conn[session.conn]
        self._names.release(session.name)
        self.channels[session.channel].discard(session.token)
        self._changed(session.channel)
        return self._to_all(UserLeft(session.user_id, session.name, session.channel))

    def _changed(self, *channels: str) -> None:
        self.version += 1
        self._dirty.update(channels)

    def _new_token(self) -> int:
        while True:
            token = secrets.randbits(32)
            if 0 < token <= U32_MAX and token not in self._by_token:
                return token

    def check(self) -> None:
        """Assert the table's invariants (for tests; these are bugs, not bad input)."""
        seen: set[int] = set()
        for channel, members in self.channels.items():
            for token in members:
                assert self._by_token[token].channel == channel
                assert token not in seen
                seen.add(token)
        assert seen == set(self._by_token)
        for conn, token in self._by_conn.items():
            assert self._by_token[token].conn == conn
        for token, s in self._by_token.items():
            assert token == s.token and token != 0
            assert (s.conn is None) == (s.dropped_at is not None)
            assert (s.udp_addr is None) == (s.bound_at is None)
            if s.conn is not None:
                assert self._by_conn[s.conn] == token
        assert self._names.names() == {s.name for s in self._by_token.values()}
        assert len({s.user_id for s in self._by_token.values()}) == len(self._by_token)
