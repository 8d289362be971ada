"""The relay's session and channel table, sans-I/O.

A session is what ``auth`` creates: a secret token, a public user id, a name, a
channel and, once the client has sent a UDP register ping, the address its voice
comes from. Control connections are known here only by an integer id that the
TCP adapter hands in; every method takes the time as an argument and returns the
actions to carry out (messages to send, connections to close). No sockets, no
clock, no logging: the control adapter owns all of that.

What goes to many connections is encoded here once: a chat is one frame for the
whole channel, a presence event one frame for the whole server (the adapter's
:class:`relay.presence.PresenceFanout` batches those per connection), and every
user is kept packed, so a welcome or a snapshot of 2,000 users is a join of
bytes, not 2,000 encodings.

Thread ownership: one thread (the asyncio loop) calls every method. The UDP loop
never touches this table; it reads the immutable snapshot that
:meth:`SessionTable.route_entries` feeds to the router.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass, replace

from relay import cluster_core as cc
from relay.names import NameBook, NameRefused, clean_chat
from relay.protocol.messages import (
    PROTOCOL,
    PROTOCOL_INSECURE,
    ChannelInfo,
    ChannelList,
    Chat,
    Error,
    MediaKey,
    Message,
    RelayEntry,
    UserInfo,
    UserJoined,
    UserLeft,
    UserState,
    Welcome,
    encode_message,
    encode_user_list,
    encode_welcome,
    pack_user,
)
from relay.protocol.voice_crypto import new_media_key, new_session_key

Addr = tuple[str, int]

DEFAULT_CHANNELS = ("Lobby", "General", "Gaming", "Music", "AFK")
DEFAULT_GRACE = 30.0
SERVER_NAME = "server"  # the name on a chat from the operator; its user id is 0, never issued
# Seconds a bound session must wait before moving its voice to another address: a
# move rebuilds the channel's routes, which a NAT rebinding needs rarely and a client
# flapping between source ports must not get on every ping.
REBIND_INTERVAL = 1.0
MAX_KEY_ID = 255  # media key ids are one byte, 0 unused: at most 255 channels hold keys at once


@dataclass(slots=True, frozen=True)
class Send:
    """Send ``message`` on control connection ``conn``."""

    conn: int
    message: Message


@dataclass(slots=True, frozen=True)
class SendFrames:
    """Write the encoded frames ``data``, the same bytes, on each of ``conns``."""

    conns: tuple[int, ...]
    data: bytes


@dataclass(slots=True, frozen=True)
class Presence:
    """Encoded presence frames for every connection that holds a session but ``but``.

    The adapter may batch them, or replace a backlog of them by a snapshot
    (:meth:`SessionTable.snapshot`), for a connection that falls behind.
    """

    data: bytes
    but: int | None = None
    # The user id whose arrival (a new session) or departure (its removal) this is alone:
    # a session that comes and goes within one presence round is told to no one.
    arrival: int = 0
    departure: int = 0


@dataclass(slots=True, frozen=True)
class Close:
    """Close control connection ``conn`` once what was queued for it is written."""

    conn: int
    reason: str


Action = Send | SendFrames | Presence | Close
# What a cluster's relay tells the others of a local change: the event for the stream
# and the directory record it writes (None: a chat, which the directory does not hold).
Outgoing = tuple[cc.Event, cc.SessionRecord | None]


@dataclass(slots=True)
class _Remote:
    """A user homed on another relay of the cluster, as this table shows it."""

    user: cc.RemoteUser
    packed: bytes
    claimed: str  # the name as this table's name book holds it


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
    source: str = ""  # the address its auth came from: sessions per address are capped
    udp_addr: Addr | None = None
    dropped_at: float | None = None  # monotonic time of the TCP drop
    bound_at: float | None = None  # monotonic time udp_addr last changed
    udp_key: bytes = b""  # protocol 2: the session's secret UDP key (never logged)
    muted: bool = False  # the user's own choice, shown to everyone (deafened implies it)
    deafened: bool = False
    server_muted: bool = False  # the operator's mute: none of its voice is forwarded
    tunnel: bool = False  # hears through its control connection (the TCP tunnel)

    def __repr__(self) -> str:
        return f"Session(user_id={self.user_id}, name={self.name!r}, channel={self.channel!r})"

    def info(self) -> UserInfo:
        return UserInfo(
            self.user_id, self.name, self.channel, self.muted, self.deafened, self.server_muted
        )


def _info(user: cc.RemoteUser) -> UserInfo:
    return UserInfo(user.user_id, user.name, user.channel, user.muted, user.deafened,
                    user.server_muted)  # fmt: skip


def _error(conn: int, code: str, message: str) -> Send:
    return Send(conn, Error(code=code, message=message))


class SessionTable:
    """Sessions by token, by connection and by channel; every mutation returns actions.

    Invariants (checked by :meth:`check`): every session is in exactly the
    channel it names; a connection has at most one session; tokens are non-zero
    and unique; names are unique; user ids are unique and never reused; the
    sessions in grace are listed in the order they lost their connection.

    ``max_sessions`` bounds the table and ``max_per_source`` (0: no bound) the
    sessions of one source address, those in grace included; when either is
    reached, a new session takes the place of the oldest one in grace (of that
    address) if there is one, so abandoned sessions never keep a user out.
    Times passed in never go backwards (a monotonic clock).
    """

    def __init__(
        self,
        channels: Iterable[str | ChannelInfo] = DEFAULT_CHANNELS,
        grace: float = DEFAULT_GRACE,
        udp_port: int = 0,
        max_sessions: int = 2000,
        rebind_interval: float = REBIND_INTERVAL,
        max_per_source: int = 0,
        sealed: bool = False,
    ) -> None:
        infos = [c if isinstance(c, ChannelInfo) else ChannelInfo(c) for c in channels]
        self.info: dict[str, ChannelInfo] = {}  # channel -> its description and limit, in order
        for c in infos:
            self.info.setdefault(c.name, c)
        if not self.info:
            raise ValueError("a relay needs at least one channel")
        self.channels: dict[str, set[int]] = {c: set() for c in self.info}  # channel -> tokens
        # Protocol 2 (``sealed``): a media key per channel, id 1, 2, ... in the order
        # channels first exist (a renamed one keeps its key); protocol 1 has none. A
        # channel a member left gets a new key (take_rotations), its id the next one
        # round 1..255 that no channel holds now: an old id stays in ``media_by_id``
        # until it is given again, so a whisper sealed under it just before can still be
        # sealed again. ``media_by_id`` is shared with the sealed router (whispers across
        # channels) and changes one entry at a time.
        self.sealed = sealed
        self.protocol = PROTOCOL if sealed else PROTOCOL_INSECURE
        self.media_keys: dict[str, tuple[int, bytes]] = {}
        self.media_by_id: dict[int, bytes] = {}
        self._last_key_id = 0  # the id given last; the next is searched from here
        self._stale_keys: dict[str, None] = {}  # channels a member left: a rotation is due
        self.rotations = 0  # channel keys made again because a member left
        # A relay cluster (relay/cluster.py) holds each channel's key in Redis, the same on
        # every relay, and does not rotate it yet: it turns this off.
        self.rotate_on_leave = True
        self.rotations_skipped = 0  # ... and not made: every id held by a channel
        if sealed:
            for name in self.info:
                self._media_key(name)
        self.grace = grace
        self.udp_port = udp_port
        self.udp_host = ""  # what the welcome advertises for UDP (--public-host); "": none
        self.max_sessions = max_sessions
        self.rebind_interval = rebind_interval
        self.max_per_source = max_per_source
        self._by_token: dict[int, Session] = {}
        self._by_conn: dict[int, int] = {}  # control connection -> token
        self._by_user: dict[int, int] = {}  # public user id -> token
        self._names = NameBook()  # by TR39 skeleton: look-alikes count as taken
        self._graced: dict[int, None] = {}  # tokens in grace, oldest drop first
        self._per_source: dict[str, int] = {}  # source address -> its sessions
        self._packed: dict[int, bytes] = {}  # token -> the user, msgpack-encoded
        self._snapshot: bytes | None = None  # encode_user_list of everyone, until a change
        self.evicted = 0  # sessions in grace removed to make room for a new one
        self._next_user_id = 1
        self.version = 0  # bumped whenever the routing view (members, bindings) changes
        self._dirty: set[str] = set()  # channels whose routing changed since take_dirty()
        self._added: list[int] = []  # tokens of sessions created since take_added()
        self._removed: list[int] = []  # user ids of sessions removed since take_removed()
        self._gone: list[tuple[int, str]] = []  # (token, channel) removed unbound, take_gone()
        self.tunnelled: set[int] = set()  # tokens of the sessions that hear through the tunnel
        self.silenced: set[int] = set()  # tokens of the sessions the operator muted
        # A cluster (relay.cluster): user ids come from it, its other relays' users are
        # shown (never routed here: they have no session), and every local change is
        # queued in ``outbox`` for the others. Outside a cluster: None, {} and [].
        self.allocate_user_id: Callable[[], int] | None = None
        self.relay_id = ""
        self.outbox: list[Outgoing] | None = None
        self.remote: dict[int, _Remote] = {}  # user id -> a user on another relay
        self.relays: list[RelayEntry] = []  # the cluster's other relays, for the welcome

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

    def by_user(self, user_id: int) -> Session | None:
        token = self._by_user.get(user_id)
        return None if token is None else self._by_token[token]

    @property
    def user_ids(self) -> Container[int]:
        """The user ids of this table's sessions (a live view: ``in`` is a dict lookup)."""
        return self._by_user.keys()

    def channel_of(self, user_id: int) -> str | None:
        """The channel of the session with public id ``user_id``, None if there is none."""
        token = self._by_user.get(user_id)
        return None if token is None else self._by_token[token].channel

    def find(self, user: str) -> Session | None:
        """The session named ``user`` exactly, or whose user id ``user`` spells in decimal."""
        if user.isdecimal():
            token = self._by_user.get(int(user))
            if token is not None:
                return self._by_token[token]
        for s in self._by_token.values():
            if s.name == user:
                return s
        return None

    @property
    def default_channel(self) -> str:
        """Where new sessions start: the first channel."""
        return next(iter(self.channels))

    def connections(self) -> list[int]:
        return list(self._by_conn)

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has work to do, or None."""
        for token in self._graced:  # the oldest drop: the first to expire
            dropped_at = self._by_token[token].dropped_at
            assert dropped_at is not None
            return dropped_at + self.grace
        return None

    def sessions_of(self, source: str) -> int:
        """How many sessions (in grace included) came from ``source``."""
        return self._per_source.get(source, 0)

    def snapshot(self) -> bytes:
        """Every user, as encoded ``user_list`` pages (SPEC.md): what a client that fell
        behind on presence gets instead of the events it missed. Encoded once per change."""
        if self._snapshot is None:
            packed = self._packed
            users = [packed[t] for members in self.channels.values() for t in members]
            users += [r.packed for r in self.remote.values()]
            self._snapshot = encode_user_list(users)
        return self._snapshot

    def route_entries(
        self, channels: Iterable[str] | None = None
    ) -> list[tuple[int, int, str, Addr | None]]:
        """(token, user_id, channel, udp_addr) of each session (in ``channels``), for the router."""
        if channels is None:
            sessions: Iterable[Session] = self._by_token.values()
        else:
            sessions = (self._by_token[t] for c in channels for t in self.channels.get(c, ()))
        return [(s.token, s.user_id, s.channel, s.udp_addr) for s in sessions]

    def take_dirty(self) -> set[str]:
        """The channels whose members or bindings changed since the last call, besides
        the sessions :meth:`take_added` lists (call that first); a channel that was
        removed or renamed away is among them, with no entries."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def take_added(self) -> list[tuple[int, int, str]]:
        """``(token, user_id, channel)`` of the sessions created or moved since the last
        call that are still unbound in a channel with no other change: the router adds
        them without rebuilding the channel (:func:`relay.router.add_unbound`), after
        dropping those :meth:`take_gone` lists. A join storm of sessions that never
        bound (an attacker's) then costs no channel rebuild at all."""
        added, self._added = self._added, []
        out = []
        for token in dict.fromkeys(added):  # once each, however often it moved
            s = self._by_token.get(token)
            if (
                s is not None
                and s.udp_addr is None
                and not s.tunnel
                and s.channel not in self._dirty
            ):
                out.append((token, s.user_id, s.channel))
        return out

    def take_gone(self) -> list[tuple[int, str]]:
        """``(token, channel)`` of the sessions that never had a UDP address and were
        removed, or moved out of ``channel``, since the last call, from a channel with no
        other change: the router drops their routes without rebuilding the channel
        (:func:`relay.router.remove_unbound`); their channels are not dirty for them. A
        moved one is listed by :meth:`take_added` too, in its new channel. (From a dirty
        channel they go with its rebuild; one moved is rebuilt in its new channel too.)"""
        gone, self._gone = self._gone, []
        return gone

    def take_removed(self) -> list[int]:
        """User ids of the sessions removed since the last call."""
        removed, self._removed = self._removed, []
        return removed

    def peer_entries(
        self, channels: Iterable[str], tokens: Iterable[int] = ()
    ) -> list[tuple[int, int, bytes, int]]:
        """Protocol 2: ``(user_id, token, udp_key, media key id)`` of the sessions in
        ``channels`` and of ``tokens``, for :class:`relay.sealed_router.SealedRouter`."""
        by_token = self._by_token
        picked = {t for c in channels for t in self.channels.get(c, ())}  # a gone one: none
        picked.update(t for t in tokens if t in by_token)
        out = []
        for t in picked:
            s = by_token[t]
            out.append((s.user_id, t, s.udp_key, self._media_key(s.channel)[0]))
        return out

    def _version_error(self, conn: int, version: int) -> Send | None:
        if version == self.protocol:
            return None
        if self.sealed:
            msg = (
                f"this relay speaks protocol {PROTOCOL} (TLS and sealed voice); "
                f"your client speaks {version}: upgrade it"
            )
        else:
            msg = (
                f"this relay runs without TLS (--insecure), protocol {PROTOCOL_INSECURE}; "
                f"your client speaks {version}"
            )
        return _error(conn, "bad_version", msg)

    # --- control messages --------------------------------------------------------

    def auth(
        self, conn: int, name: str, source: str = "", version: int = PROTOCOL_INSECURE
    ) -> list[Action]:
        """Create a session for ``conn``, whose peer is ``source``; announce it, reply welcome.

        Sessions in grace count towards both caps (auth-and-drop cannot grow the
        table without bound), but the oldest of them gives way to a new session.
        ``version``: the client's protocol, which must be the relay's.
        """
        if conn in self._by_conn:
            return [_error(conn, "already_authenticated", "this connection has a session")]
        refused = self._version_error(conn, version)
        if refused is not None:
            return [refused]
        out, refused = self._make_room(conn, source)
        if refused is not None:
            return [*out, refused]
        try:
            name = self._names.claim(name)
        except NameRefused as exc:
            return [*out, _error(conn, exc.code, str(exc))]
        token = self._new_token()
        if self.allocate_user_id is None:
            user_id = self._next_user_id
            self._next_user_id += 1
        else:
            try:
                user_id = self.allocate_user_id()
            except LookupError as exc:  # the cluster has no user id to give right now
                self._names.release(name)
                return [*out, _error(conn, "cluster_unavailable", str(exc))]
        session = Session(token, user_id, name, self.default_channel, conn, source)
        if self.sealed:
            session.udp_key = new_session_key()
        self._by_token[token] = session
        self._by_conn[conn] = token
        self._by_user[user_id] = token
        self._per_source[source] = self.sessions_of(source) + 1
        joined = UserJoined(user_id, name, session.channel)
        out.append(Presence(encode_message(joined), but=conn, arrival=user_id))
        self.channels[session.channel].add(token)
        self._set_packed(session)
        out.append(SendFrames((conn,), self._welcome(session)))
        # Unbound, it changes no one's routes: listed for take_added, not a dirty channel.
        self.version += 1
        self._added.append(token)
        self._tell(cc.Joined(self._remote_user(session)), session)
        return out

    def reconnect(
        self, conn: int, token: int, now: float, version: int = PROTOCOL_INSECURE
    ) -> list[Action]:
        """Resume the session of ``token`` on ``conn``, without presence churn."""
        out: list[Action] = self.expire(now)
        if conn in self._by_conn:
            return [*out, _error(conn, "already_authenticated", "this connection has a session")]
        refused = self._version_error(conn, version)
        if refused is not None:
            return [*out, refused]
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
        self._set_tunnel(session, False)  # the tunnel was the old connection's
        self._graced.pop(token, None)
        self._by_conn[conn] = token
        out.append(SendFrames((conn,), self._welcome(session)))
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
        limit = self.info[channel].max_users
        if limit and len(self.channels[channel]) >= limit:
            return [_error(conn, "channel_full", f"{channel[:64]!r} holds at most {limit} users")]
        return self._move(session, channel)

    def _move(self, session: Session, channel: str) -> list[Action]:
        old = session.channel
        left = encode_message(UserLeft(session.user_id, session.name, old))
        joined = encode_message(UserJoined(session.user_id, session.name, channel))
        self.channels[old].discard(session.token)
        self._left(old)
        session.channel = channel
        self.channels[channel].add(session.token)
        self._set_packed(session)
        self._tell(cc.Moved(self.relay_id, session.user_id, channel), session)
        if self._unrouted(session, old) and not session.server_muted:
            # In no one's routes: it leaves one channel's and enters another's on its own
            # (a muted one is rebuilt with its channel, which carries the mute).
            self.version += 1
            self._gone.append((session.token, old))
            self._added.append(session.token)
        else:
            self._changed(old, channel)
        if self.sealed and session.conn is not None:  # the key first: its voice opens at once
            key_id, key = self._media_key(channel)
            return [Send(session.conn, MediaKey(channel, key_id, key)), Presence(left + joined)]
        return [Presence(left + joined)]

    def _media_key(self, channel: str) -> tuple[int, bytes]:
        """The media key id and key of ``channel``, created on its first use."""
        found = self.media_keys.get(channel)
        if found is None:
            found = self.new_channel_key(channel)
            if found is None:
                raise ValueError(f"at most {MAX_KEY_ID} channels hold media keys at once")
        return found

    def new_channel_key(self, channel: str) -> tuple[int, bytes] | None:
        """Make ``channel`` a new media key and make it the channel's: ``(key id, key)``,
        or None if every id is a channel's key now (the channel keeps the one it has).

        The one place channel keys are made (a relay cluster would make them shared
        here). The id is the next one after the last given, round 1..255, that no
        channel holds: ids wrap around, and an id comes back only after every other
        free one has been given, so whatever was sealed under it is long delivered.
        """
        held = {key_id for key_id, _key in self.media_keys.values()}
        key_id = self._last_key_id
        for _ in range(MAX_KEY_ID):
            key_id = key_id % MAX_KEY_ID + 1
            if key_id not in held:
                break
        else:
            return None
        self._last_key_id = key_id
        found = self.media_keys[channel] = (key_id, new_media_key())
        self.media_by_id[key_id] = found[1]
        return found

    def _left(self, channel: str) -> None:
        """A member left ``channel`` (moved, kicked, gone): it knows the channel's key,
        which must not protect what the channel says from now on."""
        if self.sealed and self.rotate_on_leave and channel in self.media_keys:
            self._stale_keys[channel] = None

    def take_rotations(self) -> list[Action]:
        """Protocol 2: a new media key for every channel a member left since the last call,
        sent to each member still in it (its voice keeps opening: a client keeps the
        previous key). Called once per presence round, so a leave storm rotates each
        channel once, not once per leave. The routes must be rebuilt after (the peers'
        key ids changed): the channels are marked changed."""
        out: list[Action] = []
        stale, self._stale_keys = self._stale_keys, {}
        for channel in stale:
            if channel not in self.channels:
                continue  # removed meanwhile: its key went with it
            made = self.new_channel_key(channel)
            if made is None:
                self.rotations_skipped += 1
                continue
            self.rotations += 1
            self._changed(channel)
            by_token = self._by_token
            conns = [by_token[t].conn for t in self.channels[channel]]
            conns_ = tuple(c for c in conns if c is not None)
            if conns_:
                msg = encode_message(MediaKey(channel, made[0], made[1]))
                out.append(SendFrames(conns_, msg))
        return out

    @property
    def rotation_due(self) -> bool:
        """Whether :meth:`take_rotations` has work."""
        return bool(self._stale_keys)

    def chat(self, conn: int, text: str, ts: float) -> list[Action]:
        """Relay ``text`` to the sender's channel, sender included, stamped with ``ts``."""
        session = self.by_conn(conn)
        if session is None:
            return [_error(conn, "not_authenticated", "send auth or reconnect first")]
        text = clean_chat(text)  # no bidi overrides or invisible characters on others' screens
        if not text.strip():
            return [_error(conn, "bad_message", "chat text is empty once cleaned")]
        msg = Chat(text, session.user_id, session.name, session.channel, ts)
        if self.outbox is not None:
            said = cc.Said(self.relay_id, msg.user_id, msg.name, msg.channel, text, ts)
            self.outbox.append((said, None))
        return self._to_channel(session.channel, msg)

    def self_state(self, conn: int, muted: bool, deafened: bool) -> list[Action]:
        """The user of ``conn`` muted or deafened themselves: tell everyone (them too, so
        their own tree shows what the others see). Deafened is taken as muted too."""
        session = self.by_conn(conn)
        if session is None:
            return [_error(conn, "not_authenticated", "send auth or reconnect first")]
        muted = muted or deafened
        if (muted, deafened) == (session.muted, session.deafened):
            return []
        session.muted, session.deafened = muted, deafened
        self._set_packed(session)
        self._tell_state(session)
        return [Presence(encode_message(self._user_state(session)))]

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
            self._graced[token] = None
            self._set_tunnel(session, False)  # nothing left to carry it
        return []

    def tunnel(self, conn: int, on: bool) -> list[Action]:
        """The session on ``conn`` hears through its control connection (``on``) or over
        UDP; an error if the connection has no session."""
        session = self.by_conn(conn)
        if session is None:
            return [_error(conn, "not_authenticated", "send auth first")]
        self._set_tunnel(session, on)
        return []

    def _set_tunnel(self, session: Session, on: bool) -> None:
        if session.tunnel != on:
            session.tunnel = on
            if on:
                self.tunnelled.add(session.token)
            else:
                self.tunnelled.discard(session.token)
            self._changed(session.channel)

    def expire(self, now: float) -> list[Action]:
        """Remove every session whose grace period is over; announce each."""
        out: list[Action] = []
        while self._graced:
            session = self._by_token[next(iter(self._graced))]
            assert session.dropped_at is not None
            if now - session.dropped_at < self.grace:
                break  # the rest were dropped later
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

    # --- the operator's actions (admin socket, reload) -------------------------------------

    def kick(self, session: Session, code: str, reason: str) -> list[Action]:
        """End ``session`` now, without grace: its client gets ``error code`` and is closed,
        everyone else a ``user_left``. A ``reconnect`` with its token then fails."""
        out: list[Action] = []
        if session.conn is not None:
            out += [_error(session.conn, code, reason), Close(session.conn, code)]
        return out + self._remove(session)

    def server_mute(self, session: Session, muted: bool) -> list[Action]:
        """The operator mutes (or unmutes) ``session``: the routers forward none of its
        voice (its routes are rebuilt) and everyone, itself included, gets ``user_state``.
        It lasts as long as the session (a resumed one keeps it, a new ``auth`` has none)."""
        if muted == session.server_muted:
            return []
        session.server_muted = muted
        if muted:
            self.silenced.add(session.token)
        else:
            self.silenced.discard(session.token)
        self._set_packed(session)
        self._changed(session.channel)
        self._tell_state(session)
        return [Presence(encode_message(self._user_state(session)))]

    def move(self, session: Session, channel: str) -> list[Action]:
        """Move ``session`` to ``channel`` whatever its limit (the operator's move)."""
        if channel not in self.channels:
            raise KeyError(channel)
        return [] if channel == session.channel else self._move(session, channel)

    def say(self, text: str, ts: float, channel: str | None = None) -> list[Action]:
        """A chat from the operator (user id 0) to ``channel``, or to every session."""
        text = clean_chat(text)
        if not text.strip():
            raise ValueError("the message is empty once cleaned")
        if channel is not None and channel not in self.channels:
            raise KeyError(channel)
        out: list[Action] = []
        for c in self.channels if channel is None else (channel,):
            # A chat names its channel: everyone gets it in the channel they are in.
            out += self._to_channel(c, Chat(text, 0, SERVER_NAME, c, ts))
        return out

    def set_channels(self, infos: Iterable[ChannelInfo]) -> list[Action]:
        """Make the channel list ``infos`` (in that order; the first is the default).

        Members of a channel that goes are moved to the new default channel; if
        anything changed, every session is sent the new ``channel_list``.
        """
        new: dict[str, ChannelInfo] = {}
        for c in infos:
            new.setdefault(c.name, c)
        if not new:
            raise ValueError("a relay needs at least one channel")
        if list(new.values()) == list(self.info.values()):
            return []
        out: list[Action] = []
        for name in new:
            self.channels.setdefault(name, set())
        default = next(iter(new))
        for name in [c for c in self.channels if c not in new]:
            for token in list(self.channels[name]):
                out += self._move(self._by_token[token], default)
            del self.channels[name]
            self.media_keys.pop(name, None)  # its id may be given again
            self._dirty.add(name)  # the router forgets it
        self.channels = {name: self.channels[name] for name in new}
        self.info = new
        self.version += 1
        return [*out, SendFrames(tuple(self._by_conn), self._channel_list())]

    def rename_channel(self, old: str, new: str) -> list[Action]:
        """Give channel ``old`` the name ``new``, keeping its place, members and limit."""
        if old not in self.channels:
            raise KeyError(old)
        if new in self.channels:
            raise ValueError(f"there is a channel {new!r} already")
        infos = [ChannelInfo(new, c.description, c.max_users) if c.name == old else c
                 for c in self.info.values()]  # fmt: skip
        members = self.channels[old]
        self.channels = {new if c == old else c: m for c, m in self.channels.items()}
        if old in self.media_keys:  # the members keep the key they hold
            self.media_keys[new] = self.media_keys.pop(old)
        if self._stale_keys.pop(old, 0) is None:  # a rotation was due: it still is
            self._stale_keys[new] = None
        self.info = {c.name: c for c in infos}
        out: list[Action] = []
        for token in members:
            s = self._by_token[token]
            left = encode_message(UserLeft(s.user_id, s.name, old))
            joined = encode_message(UserJoined(s.user_id, s.name, new))
            s.channel = new
            self._set_packed(s)
            out.append(Presence(left + joined))
        self._changed(old, new)  # the router forgets the old name, routes the new one
        return [SendFrames(tuple(self._by_conn), self._channel_list()), *out]

    # --- the cluster (relay.cluster) -------------------------------------------------------

    def adopt(
        self,
        conn: int,
        record: cc.SessionRecord,
        now: float,
        version: int = PROTOCOL_INSECURE,
        source: str = "",
    ) -> list[Action]:
        """Resume on ``conn`` a session of another relay, as the directory holds it: same
        token, user id, name, channel and key, and no presence (it never left)."""
        if conn in self._by_conn:
            return [_error(conn, "already_authenticated", "this connection has a session")]
        refused = self._version_error(conn, version)
        if refused is not None:
            return [refused]
        user = record.user
        if record.token in self._by_token or user.user_id in self._by_user:
            return self.reconnect(conn, record.token, now, version)
        out, refused = self._make_room(conn, source)  # held to the table's bounds as an auth is
        if refused is not None:
            return [*out, refused]
        channel = user.channel if user.channel in self.channels else self.default_channel
        gone = self.remote.pop(user.user_id, None)
        if gone is not None:
            self._names.release(gone.claimed)
        name = self._names.claim(user.name)
        session = Session(record.token, user.user_id, name, channel, conn, source, None, None,
                          None, record.udp_key, user.muted, user.deafened)  # fmt: skip
        session.server_muted = user.server_muted  # the operator's mute goes with it
        self._by_token[session.token] = session
        self._by_conn[conn] = session.token
        self._by_user[session.user_id] = session.token
        self._per_source[source] = self.sessions_of(source) + 1
        self.channels[channel].add(session.token)
        self._set_packed(session)
        if session.server_muted:  # rebuilt with its channel, which carries the mute
            self.silenced.add(session.token)
            self._changed(channel)
        else:
            self.version += 1
            self._added.append(session.token)
        self._tell(cc.Resumed(self._remote_user(session), session.token), session)
        # A channel this relay lacks (the relays' channel lists differ): the default one.
        return [*out, SendFrames((conn,), self._welcome(session))]

    def release(self, token: int, user: cc.RemoteUser) -> list[Action]:
        """The session of ``token`` was resumed on another relay: drop it here without a
        word to anyone (its connection, if still open, is closed) and show it as ``user``."""
        session = self._by_token.get(token)
        if session is None or session.user_id != user.user_id:
            return []  # not one session's token and user: nobody is let go
        out: list[Action] = []
        if session.conn is not None:
            out.append(Close(session.conn, "session resumed on another relay"))
        outbox, self.outbox = self.outbox, None  # nothing to tell: the other relay did
        self._remove(session)
        self.outbox = outbox
        self.remote_join(user, quiet=True)
        return out

    def remote_join(self, user: cc.RemoteUser, quiet: bool = False) -> list[Action]:
        """Show ``user`` of another relay (``user_joined`` to everyone here, unless
        ``quiet``: it was shown already, as a local session)."""
        if user.user_id in self._by_user:
            return []  # a session of ours (a late event of a resume): ours wins
        if user.user_id in self.remote:
            return self.remote_change(user)
        info = _info(user)
        claimed = self._names.claim(user.name)
        self.remote[user.user_id] = _Remote(user, pack_user(info), claimed)
        self._snapshot = None
        if quiet:
            return []
        joined = encode_message(UserJoined(user.user_id, user.name, user.channel))
        return [Presence(joined, arrival=user.user_id)]

    def remote_change(self, user: cc.RemoteUser) -> list[Action]:
        """``user`` of another relay moved, changed state or relay: tell what shows."""
        entry = self.remote.get(user.user_id)
        if entry is None:
            return self.remote_join(user)
        old = entry.user
        entry.user, entry.packed = user, pack_user(_info(user))
        self._snapshot = None
        out = b""
        if old.channel != user.channel:
            out += encode_message(UserLeft(user.user_id, user.name, old.channel))
            out += encode_message(UserJoined(user.user_id, user.name, user.channel))
        if (old.muted, old.deafened, old.server_muted) != (
            user.muted,
            user.deafened,
            user.server_muted,
        ):
            out += encode_message(
                UserState(user.user_id, user.muted, user.deafened, user.server_muted)
            )
        return [Presence(out)] if out else []

    def remote_leave(self, user_id: int) -> list[Action]:
        """The user ``user_id`` of another relay is gone: ``user_left`` to everyone."""
        entry = self.remote.pop(user_id, None)
        if entry is None:
            return []
        self._names.release(entry.claimed)
        self._snapshot = None
        u = entry.user
        return [Presence(encode_message(UserLeft(u.user_id, u.name, u.channel)),
                         departure=u.user_id)]  # fmt: skip

    def remote_chat(self, said: cc.Said) -> list[Action]:
        """A chat from another relay, to this relay's members of its channel."""
        if said.channel not in self.channels:
            return []
        text = clean_chat(said.text)
        if not text.strip():
            return []
        name = said.name or SERVER_NAME
        return self._to_channel(said.channel, Chat(text, said.user_id, name, said.channel,
                                                   said.ts))  # fmt: skip

    def records(self) -> list[cc.SessionRecord]:
        """The directory records of every local session (a cluster's full re-sync)."""
        return [self._record(s) for s in self._by_token.values()]

    def _remote_user(self, s: Session) -> cc.RemoteUser:
        return cc.RemoteUser(s.user_id, s.name, s.channel, self.relay_id, s.muted, s.deafened,
                             s.server_muted)  # fmt: skip

    def _tell_state(self, s: Session) -> None:
        self._tell(cc.State(self.relay_id, s.user_id, s.muted, s.deafened, s.server_muted), s)

    def _record(self, s: Session) -> cc.SessionRecord:
        return cc.SessionRecord(s.token, self._remote_user(s), s.udp_key)

    def _tell(self, event: cc.Event, session: Session) -> None:
        if self.outbox is not None:
            self.outbox.append((event, self._record(session)))

    # --- helpers ------------------------------------------------------------------------

    def _welcome(self, session: Session) -> bytes:
        """The encoded snapshot for ``session``: every user, those of its channel first,
        paged over ``user_list`` frames when one frame cannot hold them all."""
        packed = self._packed
        users = list(map(packed.__getitem__, self.channels[session.channel]))  # in C: flat
        remote = self.remote.values()
        users += [r.packed for r in remote if r.user.channel == session.channel]
        for channel, members in self.channels.items():
            if channel != session.channel:
                users.extend(map(packed.__getitem__, members))
        users += [r.packed for r in remote if r.user.channel != session.channel]
        head = Welcome(
            token=session.token,
            user_id=session.user_id,
            udp_port=self.udp_port,
            udp_host=self.udp_host,
            channel=session.channel,
            channels=list(self.channels),
            users=[],
            relays=self.relays,
        )
        if self.sealed:
            key_id, key = self._media_key(session.channel)
            head = replace(
                head,
                version=PROTOCOL,
                udp_key=session.udp_key,
                media_key_id=key_id,
                media_key=key,
            )
        welcome = encode_welcome(head, users)
        if any(c.description or c.max_users for c in self.info.values()):
            welcome += self._channel_list()  # what the welcome's names alone do not say
        return welcome

    @staticmethod
    def _user_state(session: Session) -> UserState:
        return UserState(session.user_id, session.muted, session.deafened, session.server_muted)

    def _channel_list(self) -> bytes:
        return encode_message(ChannelList(list(self.info.values())))

    def _to_channel(self, channel: str, message: Message) -> list[Action]:
        by_token = self._by_token
        conns = [by_token[t].conn for t in self.channels[channel]]
        return [SendFrames(tuple(c for c in conns if c is not None), encode_message(message))]

    def _remove(self, session: Session) -> list[Action]:
        del self._by_token[session.token]
        del self._by_user[session.user_id]
        if session.conn is not None:
            del self._by_conn[session.conn]
        self._graced.pop(session.token, None)
        left = self._per_source[session.source] - 1
        if left:
            self._per_source[session.source] = left
        else:
            del self._per_source[session.source]
        del self._packed[session.token]
        self._snapshot = None
        self._names.release(session.name)
        self.channels[session.channel].discard(session.token)
        self._left(session.channel)
        if self._unrouted(session, session.channel):
            self.version += 1
            self._gone.append((session.token, session.channel))
        else:
            self._changed(session.channel)
        self.tunnelled.discard(session.token)
        self.silenced.discard(session.token)
        self._removed.append(session.user_id)
        self._tell(cc.Left(self.relay_id, session.user_id), session)
        session.udp_key = b""  # the one reference the table held
        gone = UserLeft(session.user_id, session.name, session.channel)
        return [Presence(encode_message(gone), departure=session.user_id)]

    def _evict_oldest_graced(self, source: str | None) -> list[Action] | None:
        """Remove the session that has waited longest in grace (from ``source``, if given)."""
        for token in self._graced:
            session = self._by_token[token]
            if source is None or session.source == source:
                self.evicted += 1
                return self._remove(session)
        return None

    def _set_packed(self, session: Session) -> None:
        self._packed[session.token] = pack_user(session.info())
        self._snapshot = None

    def _unrouted(self, session: Session, channel: str) -> bool:
        """``session``, in ``channel``, is in no one's routes as last built and those
        routes list it in ``channel``: the router may drop it alone (take_gone).

        It has no UDP address nor the tunnel, and ``channel`` has no change pending: a
        tunnel that went off since the last build (still in its channel's routes) or a
        rename (the routes know the old name) left it dirty, and its rebuild drops the
        session anyway, at no further cost."""
        return session.udp_addr is None and not session.tunnel and channel not in self._dirty

    def _changed(self, *channels: str) -> None:
        self.version += 1
        self._dirty.update(channels)

    def _make_room(self, conn: int, source: str) -> tuple[list[Action], Send | None]:
        """Room for one more session from ``source``: the graced sessions evicted for it
        (oldest first, of that address past its cap, then of anyone past the table's),
        and the refusal to send ``conn`` if there is none to evict."""
        out: list[Action] = []
        if self.max_per_source and self.sessions_of(source) >= self.max_per_source:
            evicted = self._evict_oldest_graced(source)
            if evicted is None:
                msg = f"at most {self.max_per_source} sessions from one address"
                return out, _error(conn, "too_many_sessions", msg)
            out += evicted
        if len(self._by_token) >= self.max_sessions:
            evicted = self._evict_oldest_graced(None)
            if evicted is None:
                return out, _error(conn, "server_full", "the relay has no room for another session")
            out += evicted
        return out, None

    def _new_token(self) -> int:
        """A secret session token: 64 random bits in protocol 2, where it travels only
        inside TLS (a guess at 64 a second from each of 10,000 addresses finds one of
        10,000 sessions in about 90 years; with 32 bits, in under a second). Protocol 1's voice
        header has room for 32 (SPEC.md)."""
        bits = 64 if self.sealed else 32
        while True:
            token = secrets.randbits(bits)
            if token > 0 and token not in self._by_token:
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
        assert {s.user_id: t for t, s in self._by_token.items()} == self._by_user
        assert list(self.channels) == list(self.info)
        for token, s in self._by_token.items():
            assert token == s.token and token != 0
            assert (s.conn is None) == (s.dropped_at is not None)
            assert (s.udp_addr is None) == (s.bound_at is None)
            if s.conn is not None:
                assert self._by_conn[s.conn] == token
        names = {s.name for s in self._by_token.values()}
        names |= {r.claimed for r in self.remote.values()}
        assert self._names.names() == names
        assert not set(self.remote) & set(self._by_user)
        graced = [t for t, s in self._by_token.items() if s.conn is None]
        assert set(self._graced) == set(graced)
        drops = [self._by_token[t].dropped_at or 0.0 for t in self._graced]
        assert drops == sorted(drops)
        sources: dict[str, int] = {}
        for s in self._by_token.values():
            sources[s.source] = sources.get(s.source, 0) + 1
            assert self._packed[s.token] == pack_user(s.info())
        assert sources == self._per_source and set(self._packed) == set(self._by_token)
        assert len({s.user_id for s in self._by_token.values()}) == len(self._by_token)
        # Every channel's key is its own, under an id that names it for the router.
        ids = [key_id for key_id, _key in self.media_keys.values()]
        assert len(ids) == len(set(ids)) and all(1 <= i <= MAX_KEY_ID for i in ids)
        assert all(self.media_by_id[i] == k for i, k in self.media_keys.values())
        # Only a connected session hears through its connection (the TCP tunnel).
        assert self.tunnelled == {t for t, s in self._by_token.items() if s.tunnel}
        assert self.silenced == {t for t, s in self._by_token.items() if s.server_muted}
        assert all(s.conn is not None for s in self._by_token.values() if s.tunnel)
