"""The relay cluster's decisions, sans-I/O (docs/cluster.md): records, events, the view.

What the relays of a cluster keep in Redis and say to each other over its pub/sub
is defined here as typed records with ``parse`` and ``__bytes__`` (JSON, so an
operator can read them with ``redis-cli``):

* :class:`RelayRecord`: one relay's registration (its id, mesh number, public TCP
  and UDP addresses, certificate fingerprint);
* :class:`SessionRecord`: one session in the directory (token to user id, name,
  channel, home relay and the session key a resume on another relay needs);
* the events of the pub/sub stream (:data:`Event`): a session joined, moved, left,
  changed its state, chatted, resumed elsewhere; a relay re-announced all of its
  sessions (after it lost Redis).

:class:`ClusterView` is one relay's picture of the others, built from those events,
the registry and the directory, with no I/O and no clock: every method takes
``now`` and returns the :data:`Change` list the adapter carries out on the session
table (presence, chat) and the router (who needs a datagram). What a heartbeat
expiry means (stop routing to that relay at once, announce its sessions as left
only after the grace period if none resumed) is decided here.

Everything read from Redis is treated as input: a record or event that does not
parse raises :class:`~relay.protocol.errors.ProtocolError`, which the adapter
counts and drops.
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import Any

from relay.names import NameRefused, normalize_name
from relay.protocol.errors import ProtocolError
from relay.protocol.messages import MAX_CHANNEL, MAX_NAME, MAX_TEXT
from relay.protocol.widths import U32_MAX

PREFIX = "vc:"  # every Redis key of the cluster starts with it
RELAYS_KEY = PREFIX + "relays"  # hash: relay id -> RelayRecord
ALIVE_KEY = PREFIX + "alive:"  # + relay id: the heartbeat, a string that expires
SESSIONS_KEY = PREFIX + "sessions"  # hash: token (decimal) -> SessionRecord
MEMBERS_KEY = PREFIX + "members:"  # + channel: set of the user ids in it
MEDIA_KEY = PREFIX + "media"  # hash: channel -> "key id:hex key"
MEDIA_NEXT_KEY = PREFIX + "media_next"  # the last media key id given out
USER_ID_KEY = PREFIX + "user_id"  # the last user id given out (in blocks)
RELAY_NUM_KEY = PREFIX + "relay_num"  # the last mesh number given out
EVENTS = PREFIX + "events"  # the pub/sub channel every relay publishes and reads

HEARTBEAT = 1.0  # seconds between two heartbeats of a relay
ALIVE_TTL = 3.0  # seconds a heartbeat key lives: a relay silent this long is dead
MAX_RELAY_ID = 64
MAX_ADDR = 260  # host (253) and ":port"
MAX_FINGERPRINT = 128
MAX_RECORD = 4096  # bytes of one record or event (a sync lists users: see MAX_SYNC)
MAX_SYNC_USERS = 4096


def _obj(data: bytes | str, what: str) -> dict[str, Any]:
    if len(data) > MAX_RECORD * (MAX_SYNC_USERS if what == "event" else 1):
        raise ProtocolError(f"{what} of {len(data)} bytes is too large")
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    return value


def _str(obj: dict[str, Any], key: str, max_len: int, allow_empty: bool = False) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or len(value) > max_len or (not value and not allow_empty):
        raise ProtocolError(f"field {key!r} must be a string of 1..{max_len} characters")
    return value


def _name(obj: dict[str, Any], key: str, allow_empty: bool = False) -> str:
    """A user's name as its relay took it: one the name rules accept (the session table
    claims it, and shows it to everyone)."""
    value = _str(obj, key, MAX_NAME, allow_empty)
    if value:
        try:
            normalize_name(value)
        except NameRefused as exc:
            raise ProtocolError(f"field {key!r}: {exc}") from None
    return value


def _int(obj: dict[str, Any], key: str, low: int = 0, high: int = U32_MAX) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ProtocolError(f"field {key!r} must be an integer in {low}..{high}")
    return value


def _addr(obj: dict[str, Any], key: str) -> str:
    """``host:port`` (an IPv6 host in brackets), port 1..65535 in decimal digits."""
    value = _str(obj, key, MAX_ADDR)
    host, _sep, port = value.rpartition(":")
    if not host.strip("[]") or not port.isascii() or not port.isdigit() \
            or not 1 <= int(port) <= 0xFFFF:  # fmt: skip
        raise ProtocolError(f"field {key!r} must be host:port, port 1..65535")
    return value


def _bool(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise ProtocolError(f"field {key!r} must be true or false")
    return value


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(slots=True, frozen=True)
class RelayRecord:
    """One relay as it registers: ``num`` numbers it in mesh datagrams; ``tcp`` is the
    ``host:port`` clients reach it at, ``udp`` where other relays send it voice."""

    id: str
    num: int
    tcp: str
    udp: str
    fingerprint: str = ""

    @classmethod
    def parse(cls, data: bytes | str) -> RelayRecord:
        o = _obj(data, "relay record")
        return cls(
            _str(o, "id", MAX_RELAY_ID),
            _int(o, "num", 1),
            _addr(o, "tcp"),
            _addr(o, "udp"),
            _str(o, "fingerprint", MAX_FINGERPRINT, allow_empty=True),
        )

    def __bytes__(self) -> bytes:
        return _dump({"id": self.id, "num": self.num, "tcp": self.tcp, "udp": self.udp,
                      "fingerprint": self.fingerprint})  # fmt: skip

    def udp_addr(self) -> tuple[str, int]:
        host, _sep, port = self.udp.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(slots=True, frozen=True)
class RemoteUser:
    """A session as the other relays know it: no token, no key."""

    user_id: int
    name: str
    channel: str
    relay: str
    muted: bool = False
    deafened: bool = False
    server_muted: bool = False  # the operator's mute, kept by a resume on another relay

    def to_obj(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "name": self.name, "channel": self.channel,
                "relay": self.relay, "muted": self.muted, "deafened": self.deafened,
                "server_muted": self.server_muted}  # fmt: skip

    @classmethod
    def from_obj(cls, o: Any) -> RemoteUser:
        if not isinstance(o, dict):
            raise ProtocolError("a user must be a JSON object")
        return cls(
            _int(o, "user_id", 1),
            _name(o, "name"),
            _str(o, "channel", MAX_CHANNEL),
            _str(o, "relay", MAX_RELAY_ID),
            _bool(o, "muted"),
            _bool(o, "deafened"),
            _bool(o, "server_muted"),
        )


@dataclass(slots=True, frozen=True)
class SessionRecord:
    """One session of the directory: what any relay needs to resume it."""

    token: int
    user: RemoteUser
    udp_key: bytes = b""  # secret: the session's UDP key (protocol 2)

    @classmethod
    def parse(cls, data: bytes | str) -> SessionRecord:
        o = _obj(data, "session record")
        try:
            key = bytes.fromhex(_str(o, "udp_key", 64, allow_empty=True))
        except ValueError:
            raise ProtocolError("field 'udp_key' must be hex") from None
        if len(key) not in (0, 32):
            raise ProtocolError("field 'udp_key' must be 32 bytes")
        return cls(_int(o, "token", 1), RemoteUser.from_obj(o), key)

    def __bytes__(self) -> bytes:
        return _dump({"token": self.token, **self.user.to_obj(), "udp_key": self.udp_key.hex()})

    def __repr__(self) -> str:  # never a token or key in a log line
        return f"SessionRecord(user={self.user!r})"


def parse_media_value(value: bytes | str) -> tuple[int, bytes]:
    """``"id:hex"``, a channel's media key as Redis holds it: (key id, key)."""
    try:
        text = value.decode() if isinstance(value, bytes) else value
        kid, _sep, key = text.partition(":")
        out = int(kid), bytes.fromhex(key)
    except ValueError:  # UnicodeDecodeError included
        raise ProtocolError("bad media key record: not 'id:hex'") from None
    if not 1 <= out[0] <= 255 or len(out[1]) != 16:
        raise ProtocolError("bad media key record: wrong id or length")
    return out


def media_value(key_id: int, key: bytes) -> str:
    return f"{key_id}:{key.hex()}"


# --- events of the pub/sub stream -------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Joined:
    """A new session on ``user.relay``."""

    user: RemoteUser
    KIND = "joined"

    def to_obj(self) -> dict[str, Any]:
        return {"user": self.user.to_obj()}


@dataclass(slots=True, frozen=True)
class Moved:
    relay: str
    user_id: int
    channel: str
    KIND = "moved"

    def to_obj(self) -> dict[str, Any]:
        return {"relay": self.relay, "user_id": self.user_id, "channel": self.channel}


@dataclass(slots=True, frozen=True)
class Left:
    relay: str
    user_id: int
    KIND = "left"

    def to_obj(self) -> dict[str, Any]:
        return {"relay": self.relay, "user_id": self.user_id}


@dataclass(slots=True, frozen=True)
class State:
    relay: str
    user_id: int
    muted: bool
    deafened: bool
    server_muted: bool = False
    KIND = "state"

    def to_obj(self) -> dict[str, Any]:
        return {"relay": self.relay, "user_id": self.user_id, "muted": self.muted,
                "deafened": self.deafened, "server_muted": self.server_muted}  # fmt: skip


@dataclass(slots=True, frozen=True)
class Said:
    """A chat in ``channel`` (user id 0: the operator of ``relay``)."""

    relay: str
    user_id: int
    name: str
    channel: str
    text: str
    ts: float
    KIND = "said"

    def to_obj(self) -> dict[str, Any]:
        return {"relay": self.relay, "user_id": self.user_id, "name": self.name,
                "channel": self.channel, "text": self.text, "ts": self.ts}  # fmt: skip


@dataclass(slots=True, frozen=True)
class Resumed:
    """The session of ``user`` now lives on ``user.relay`` (a failover): no presence."""

    user: RemoteUser
    token: int  # so the relay that held it can let go of it; relays only see this
    KIND = "resumed"

    def to_obj(self) -> dict[str, Any]:
        return {"user": self.user.to_obj(), "token": self.token}

    def __repr__(self) -> str:
        return f"Resumed(user={self.user!r})"


@dataclass(slots=True, frozen=True)
class Synced:
    """Every session of ``relay`` as it is now (it lost Redis and is back, or restarted
    its registration): the others replace what they knew of it by this."""

    relay: str
    users: tuple[RemoteUser, ...]
    KIND = "synced"

    def to_obj(self) -> dict[str, Any]:
        return {"relay": self.relay, "users": [u.to_obj() for u in self.users]}


Event = Joined | Moved | Left | State | Said | Resumed | Synced


def encode_event(event: Event) -> bytes:
    return _dump({"kind": event.KIND, **event.to_obj()})


def parse_event(data: bytes | str) -> Event:
    """The event in ``data``; ProtocolError for anything else."""
    o = _obj(data, "event")
    kind = o.get("kind")
    if kind == Joined.KIND:
        return Joined(RemoteUser.from_obj(o.get("user")))
    if kind == Resumed.KIND:
        return Resumed(RemoteUser.from_obj(o.get("user")), _int(o, "token", 1))
    relay = _str(o, "relay", MAX_RELAY_ID)
    if kind == Synced.KIND:
        users = o.get("users")
        if not isinstance(users, list) or len(users) > MAX_SYNC_USERS:
            raise ProtocolError(f"field 'users' must be a list of at most {MAX_SYNC_USERS}")
        return Synced(relay, tuple(RemoteUser.from_obj(u) for u in users))
    if kind == Said.KIND:
        ts = o.get("ts")
        if not isinstance(ts, int | float) or isinstance(ts, bool) or ts != ts:
            raise ProtocolError("field 'ts' must be a number")
        return Said(relay, _int(o, "user_id"), _name(o, "name", allow_empty=True),
                    _str(o, "channel", MAX_CHANNEL), _str(o, "text", MAX_TEXT),
                    float(ts))  # fmt: skip
    user_id = _int(o, "user_id", 1)
    if kind == Moved.KIND:
        return Moved(relay, user_id, _str(o, "channel", MAX_CHANNEL))
    if kind == Left.KIND:
        return Left(relay, user_id)
    if kind == State.KIND:
        return State(relay, user_id, _bool(o, "muted"), _bool(o, "deafened"),
                     _bool(o, "server_muted"))  # fmt: skip
    raise ProtocolError(f"unknown event kind {str(kind)[:32]!r}")


# --- what the adapter carries out ------------------------------------------------------


@dataclass(slots=True, frozen=True)
class UserCame:
    """A user on another relay to show (``user_joined``)."""

    user: RemoteUser


@dataclass(slots=True, frozen=True)
class UserWent:
    """A user on another relay to take away (``user_left``)."""

    user: RemoteUser


@dataclass(slots=True, frozen=True)
class UserChanged:
    """A user on another relay moved or changed state: ``old`` as it was, ``user`` now."""

    old: RemoteUser
    user: RemoteUser


@dataclass(slots=True, frozen=True)
class Release:
    """The local session of ``token`` was resumed on another relay: let it go quietly,
    and keep showing it as ``user`` (no leave, no join: it is the same session)."""

    token: int
    user: RemoteUser

    def __repr__(self) -> str:
        return f"Release(user={self.user!r})"


@dataclass(slots=True, frozen=True)
class ChatIn:
    said: Said


Change = UserCame | UserWent | UserChanged | Release | ChatIn


@dataclass(slots=True)
class ClusterView:
    """One relay's picture of the rest of the cluster.

    ``users`` holds every session homed on another relay (by user id), those of a
    dead relay included until the grace period is over or they resume. A relay is
    *alive* while its heartbeat key exists; only alive relays get datagrams.
    """

    me: str
    grace: float
    relays: dict[str, RelayRecord] = field(default_factory=dict)
    alive: set[str] = field(default_factory=set)
    dead_since: dict[str, float] = field(default_factory=dict)
    users: dict[int, RemoteUser] = field(default_factory=dict)
    version: int = 0  # bumped on every change that may change where datagrams go

    # --- events -------------------------------------------------------------------------

    def forget(self, user_id: int) -> None:
        """``user_id`` is a session of this relay now (it resumed here)."""
        if self.users.pop(user_id, None) is not None:
            self.version += 1

    def apply(self, event: Event, local: Container[int] | None = None) -> list[Change]:
        """What ``event`` from the stream changes here. ``local``: user ids of this relay's
        own sessions (a Resumed of one of them releases it). Our own events: nothing."""
        if isinstance(event, Joined | Resumed):
            user = event.user
            if user.relay == self.me:
                return []
            old = self.users.get(user.user_id)
            self.users[user.user_id] = user
            self.version += 1
            if isinstance(event, Resumed):
                if local is not None and user.user_id in local:
                    return [Release(event.token, user)]
                if old is None:
                    return [UserCame(user)]
                return [UserChanged(old, user)] if old != user else []
            if old is not None:
                return [UserChanged(old, user)] if old != user else []
            return [UserCame(user)]
        if event.relay == self.me:
            return []
        if isinstance(event, Said):
            return [ChatIn(event)]
        if isinstance(event, Synced):
            return self._replace(event.relay, event.users)
        old = self.users.get(event.user_id)
        if old is None or old.relay != event.relay:
            return []  # not (or no longer) that relay's: a late event of a resumed session
        if isinstance(event, Left):
            del self.users[event.user_id]
            self.version += 1
            return [UserWent(old)]
        if isinstance(event, Moved):
            new = RemoteUser(old.user_id, old.name, event.channel, old.relay, old.muted,
                             old.deafened, old.server_muted)  # fmt: skip
            self.version += 1
        else:
            new = RemoteUser(old.user_id, old.name, old.channel, old.relay, event.muted,
                             event.deafened, event.server_muted)  # fmt: skip
        self.users[event.user_id] = new
        return [UserChanged(old, new)] if new != old else []

    def _replace(self, relay: str, users: Iterable[RemoteUser]) -> list[Change]:
        """``relay``'s sessions are ``users``, no more and no less."""
        fresh = {u.user_id: u for u in users if u.relay == relay}
        out: list[Change] = []
        for uid, old in list(self.users.items()):
            if old.relay == relay and uid not in fresh:
                del self.users[uid]
                out.append(UserWent(old))
        for uid, user in fresh.items():
            was = self.users.get(uid)
            self.users[uid] = user
            if was is None:
                out.append(UserCame(user))
            elif was != user:
                out.append(UserChanged(was, user))
        self.version += 1
        return out

    def load(self, records: Iterable[SessionRecord]) -> list[Change]:
        """The whole directory as read from Redis (at start, or when Redis is back), with
        the registry read just before: the sessions of a registered relay are what it
        lists (a relay registers in the same transaction as it writes all of its
        sessions); those of a relay not registered (Redis came back empty and it has not
        re-registered yet) are only added to, never taken away: its ``synced`` will say,
        or its missing heartbeat will end them after the grace."""
        by_relay: dict[str, list[RemoteUser]] = {}
        for r in records:
            if r.user.relay != self.me:
                by_relay.setdefault(r.user.relay, []).append(r.user)
        out: list[Change] = []
        for relay in {u.relay for u in self.users.values()} | set(by_relay):
            fresh = by_relay.get(relay, [])
            if relay not in self.relays:
                known = [u for u in self.users.values() if u.relay == relay]
                kept = {u.user_id for u in fresh}
                fresh += [u for u in known if u.user_id not in kept]
            out += self._replace(relay, fresh)
        return out

    # --- the registry -------------------------------------------------------------------

    def registry(self, records: Iterable[RelayRecord], alive: Iterable[str], now: float) -> bool:
        """The registry as read at ``now``: which relays exist and which beat. Returns
        whether routing changed (a relay came or went). A relay whose heartbeat is gone
        is sent nothing from now on; its sessions wait out the grace (:meth:`expire`)."""
        self.relays = {r.id: r for r in records if r.id != self.me}
        beating = {r for r in alive if r in self.relays}
        changed = beating != self.alive
        for r in self.alive - beating:
            self.dead_since.setdefault(r, now)
        for r in beating:
            self.dead_since.pop(r, None)
        for r in {u.relay for u in self.users.values()} - beating:
            self.dead_since.setdefault(r, now)  # never seen beating (registry read late)
        self.alive = beating
        if changed:
            self.version += 1
        return changed

    def next_deadline(self) -> float | None:
        """When :meth:`expire` has work to do, or None."""
        if not self.dead_since:
            return None
        return min(self.dead_since.values()) + self.grace

    def expire(self, now: float) -> tuple[list[Change], list[str]]:
        """The sessions of relays dead for longer than the grace period that did not
        resume, to announce as left; and those relays, for the directory's cleanup."""
        out: list[Change] = []
        gone = [r for r, t in self.dead_since.items() if now - t >= self.grace]
        for relay in gone:
            del self.dead_since[relay]
            for uid, user in list(self.users.items()):
                if user.relay == relay:
                    del self.users[uid]
                    out.append(UserWent(user))
        if out:
            self.version += 1
        return out, gone

    # --- routing ------------------------------------------------------------------------

    def channel_relays(self) -> dict[str, tuple[tuple[str, int], ...]]:
        """Channel -> the UDP address of each alive relay with a user in it: where one
        datagram of a speaker in that channel goes (once per relay)."""
        found: dict[str, set[str]] = {}
        for user in self.users.values():
            if user.relay in self.alive:
                found.setdefault(user.channel, set()).add(user.relay)
        return {ch: tuple(sorted(self.relays[r].udp_addr() for r in rs))
                for ch, rs in found.items()}  # fmt: skip

    def user_relays(self) -> dict[int, tuple[str, int]]:
        """User id -> the UDP address of its (alive) relay: where a whisper to it goes."""
        return {uid: self.relays[u.relay].udp_addr() for uid, u in self.users.items()
                if u.relay in self.alive}  # fmt: skip

    def relay_nums(self) -> dict[int, str]:
        """Mesh number -> relay id of every alive relay: whose datagrams are taken."""
        return {self.relays[r].num: r for r in self.alive}

    def relay_list(self) -> list[tuple[str, str]]:
        """``(tcp address, fingerprint)`` of every alive relay, for a welcome."""
        return sorted((self.relays[r].tcp, self.relays[r].fingerprint) for r in self.alive)
