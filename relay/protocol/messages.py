"""The TCP control stream (SPEC.md): frames of a u32 big-endian length and a msgpack
map with a ``type`` key, one dataclass per message type.

A message's dataclass is its schema: field types carry their limits as
``Annotated`` constraints, a field with a default may be absent on the wire, and
:mod:`relay.protocol.schema` does the checking. Every parser here takes any bytes
at all and returns a value or raises
:class:`~relay.protocol.errors.ProtocolError`; nothing else escapes.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field, is_dataclass, replace
from itertools import accumulate
from typing import Annotated, Any, ClassVar

import msgpack

from relay.protocol import schema
from relay.protocol.errors import FramingError, ProtocolError
from relay.protocol.schema import Bounded, Finite, MaxItems, Range, Size, Text
from relay.protocol.widths import U16_MAX, U32_MAX, U64_MAX

LENGTH = struct.Struct(">I")
MAX_FRAME = 64 * 1024  # largest msgpack body accepted in one control frame
MAX_NAME = 32  # characters in a user name
MAX_CHANNEL = 64  # characters in a channel name
MAX_TEXT = 2000  # characters in one chat message
MAX_CODE = 64  # characters in an error code
MAX_LIST = 4096  # entries in a channel or user list of a welcome
MAX_RECEPTION = 64  # speakers in one reception report: as many as a client decodes at once
MAX_LISTENERS = 65535  # the listeners a receiver report can count
MAX_PASSWORD = 256  # characters in a server password
# Protocol versions (SPEC.md): 1 is plain TCP and plain voice (a relay started with
# --insecure), 2 is TLS and sealed voice. A message without a version is version 1.
PROTOCOL_INSECURE = 1
PROTOCOL = 2

# Field types: a name means the same thing in every message.
Name = Annotated[str, Text(max_len=MAX_NAME)]
ChannelName = Annotated[str, Text(max_len=MAX_CHANNEL)]
ChatText = Annotated[str, Text(max_len=MAX_TEXT)]
ErrorCode = Annotated[str, Text(max_len=MAX_CODE)]
ErrorText = Annotated[str, Text(max_len=MAX_TEXT, allow_empty=True)]
Token = Annotated[int, Range(1, U32_MAX)]  # secret; 0 is never issued
UserId = Annotated[int, Range(0, U32_MAX)]
Port = Annotated[int, Range(0, U16_MAX)]
Nonce = Annotated[int, Range(0, U64_MAX)]
Seconds = Annotated[float, Finite()]
Percent = Annotated[float, Bounded(0.0, 100.0)]
MAX_BURST = 64.0  # packets: a mean loss run beyond that is a dead path, not a burst
BurstMean = Annotated[float, Bounded(0.0, MAX_BURST)]
Version = Annotated[int, Range(1, 255)]
Password = Annotated[str, Text(max_len=MAX_PASSWORD, allow_empty=True)]
SessionKey = Annotated[bytes, Size(32, 32)]  # secret: the session's UDP tag key
MediaKeyBytes = Annotated[bytes, Size(16, 16)]  # secret: a channel's AES-128 media key
KeyId = Annotated[int, Range(0, 255)]
# A voice datagram as it travels over UDP (protocol 2, SPEC.md): at most its largest size.
MAX_TUNNELLED = 1342  # relay.protocol.sealed_datagram.MAX_DATAGRAM (checked by the tests)
Datagram = Annotated[bytes, Size(1, MAX_TUNNELLED)]
Host = Annotated[str, Text(max_len=253, allow_empty=True)]  # a DNS name or an IP literal


@dataclass(slots=True, frozen=True)
class UserInfo:
    """One user as listed in a welcome snapshot (and in the client's roster event).
    ``muted`` and ``deafened``: the user's own choice, shown to everyone; ``server_muted``:
    the relay's operator muted them, and the relay forwards none of their voice (each
    absent on the wire when false, so a user list is byte for byte what it was before)."""

    user_id: UserId
    name: Name
    channel: ChannelName
    muted: bool = False
    deafened: bool = False
    server_muted: bool = False

    OMIT_DEFAULTS: ClassVar[tuple[str, ...]] = ("muted", "deafened", "server_muted")


@dataclass(slots=True, frozen=True)
class RelayEntry:
    """One relay of a cluster, as a relay holds it for ``welcome.relays`` (docs/cluster.md):
    its ``host:port`` and the SHA-256 fingerprint of its TLS certificate (the form a
    client pins). Goes out as the map ``{addr, fingerprint}``."""

    addr: Annotated[str, Text(max_len=260)]
    fingerprint: Annotated[str, Text(max_len=128, allow_empty=True)] = ""


MESSAGE_TYPES: dict[str, type[Message]] = {}


class Message:
    """Base of every control message: ``type`` on the wire, fields from the dataclass."""

    __slots__ = ()

    TYPE: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.TYPE:
            MESSAGE_TYPES[cls.TYPE] = cls

    def to_map(self) -> dict[str, Any]:
        """The msgpack map this message travels as: ``type`` first, then every field."""
        return {"type": self.TYPE, **schema.to_map(self)}


def _is_record(value: object) -> bool:
    """A dataclass instance (made a plain map on the wire), not a class."""
    return is_dataclass(value) and not isinstance(value, type)


def _drop_defaults(out: dict[str, Any], **defaults: Any) -> dict[str, Any]:
    """``out`` without the keys whose value is the default: a protocol-1 message stays
    byte for byte what it was before protocol 2 added them."""
    for key, default in defaults.items():
        if out.get(key) == default:
            del out[key]
    return out


@dataclass(slots=True, frozen=True)
class Auth(Message):
    """A new session. ``password``: the server's, if it has one (over TLS only)."""

    TYPE = "auth"
    name: Name
    version: Version = PROTOCOL_INSECURE
    password: Password = ""

    def to_map(self) -> dict[str, Any]:
        return _drop_defaults(Message.to_map(self), version=PROTOCOL_INSECURE, password="")

    def __repr__(self) -> str:  # never a password in a log line
        return f"Auth(name={self.name!r}, version={self.version})"


@dataclass(slots=True, frozen=True)
class Reconnect(Message):
    TYPE = "reconnect"
    token: Token
    version: Version = PROTOCOL_INSECURE

    def to_map(self) -> dict[str, Any]:
        return _drop_defaults(Message.to_map(self), version=PROTOCOL_INSECURE)


@dataclass(slots=True, frozen=True)
class Welcome(Message):
    """The session's state. ``more``: the user list goes on in ``user_list`` frames
    that follow at once (absent on the wire when false, as before paging)."""

    TYPE = "welcome"
    token: Token
    user_id: UserId
    udp_port: Port
    channel: ChannelName
    channels: Annotated[list[ChannelName], MaxItems(MAX_LIST)]
    users: Annotated[list[UserInfo], MaxItems(MAX_LIST)]
    more: bool = False
    # Protocol 2: the session's UDP key and its channel's media key (SPEC.md).
    version: Version = PROTOCOL_INSECURE
    udp_key: SessionKey | None = None
    media_key_id: KeyId = 0
    media_key: MediaKeyBytes | None = None
    # Where to send UDP voice when it is not the host the client connected to (the
    # relay's --public-host); "": that host.
    udp_host: Host = ""
    # The other relays of this relay's cluster, as maps {addr, fingerprint} (SPEC.md,
    # "Several relays"). Not checked here: the client takes each entry on its own merits
    # (pipeline/core/relays.py) and drops a bad one, never the welcome. A standalone
    # relay sends none (the key is absent).
    relays: Any = field(default_factory=list)

    def to_map(self) -> dict[str, Any]:
        out = _drop_defaults(
            Message.to_map(self),
            more=False,
            version=PROTOCOL_INSECURE,
            udp_key=None,
            media_key_id=0,
            media_key=None,
            udp_host="",
            relays=[],
        )
        if isinstance(self.relays, list) and any(map(_is_record, self.relays)):
            out["relays"] = [schema.to_map(r) if _is_record(r) else r for r in self.relays]
        return out

    def __repr__(self) -> str:  # never a key in a log line or a test failure
        return f"Welcome(user_id={self.user_id}, channel={self.channel!r}, version={self.version})"


@dataclass(slots=True, frozen=True)
class MediaKey(Message):
    """Protocol 2: the media key of the channel the session just moved to, sent to it
    alone before the presence of the move; or the new key of the channel it is in,
    sent to every member after one left (SPEC.md, "Rotation")."""

    TYPE = "media_key"
    channel: ChannelName
    key_id: KeyId
    key: MediaKeyBytes

    def __repr__(self) -> str:
        return f"MediaKey(channel={self.channel!r}, key_id={self.key_id})"


@dataclass(slots=True, frozen=True)
class UserList(Message):
    """One page of the relay's user list (SPEC.md): a welcome's continuation, or a
    snapshot that replaces the whole list held (``first``) for a client that fell
    behind on presence. ``last`` marks the final page; the pages of one list are
    written back to back."""

    TYPE = "user_list"
    users: Annotated[list[UserInfo], MaxItems(MAX_LIST)]
    first: bool = False
    last: bool = True


@dataclass(slots=True, frozen=True)
class Join(Message):
    TYPE = "join"
    channel: ChannelName


@dataclass(slots=True, frozen=True)
class Chat(Message):
    """Client to relay: only ``text``. Relay to client: all fields, filled by the relay."""

    TYPE = "chat"
    text: ChatText
    user_id: UserId = 0
    name: Name = ""
    channel: ChannelName = ""
    ts: Seconds = 0.0

    def to_map(self) -> dict[str, Any]:
        if not self.name:  # a client's chat carries the text alone
            return {"type": self.TYPE, "text": self.text}
        return Message.to_map(self)


@dataclass(slots=True, frozen=True)
class Ping(Message):
    TYPE = "ping"
    nonce: Nonce
    t: Seconds


@dataclass(slots=True, frozen=True)
class Pong(Message):
    TYPE = "pong"
    nonce: Nonce
    t: Seconds


@dataclass(slots=True, frozen=True)
class UserJoined(Message):
    TYPE = "user_joined"
    user_id: UserId
    name: Name
    channel: ChannelName


@dataclass(slots=True, frozen=True)
class UserLeft(Message):
    TYPE = "user_left"
    user_id: UserId
    name: Name
    channel: ChannelName


@dataclass(slots=True, frozen=True)
class SelfState(Message):
    """Client to relay: the user's own mute and deafen, for everyone's tree. The relay
    takes deafened as muted too (a user who hears nothing does not talk, as in Mumble)."""

    TYPE = "self_state"
    muted: bool
    deafened: bool = False


@dataclass(slots=True, frozen=True)
class UserState(Message):
    """Relay to everyone (presence): a user's mute and deafen, or the operator's mute of
    them (``server_muted``, absent when false), changed."""

    TYPE = "user_state"
    user_id: UserId
    muted: bool = False
    deafened: bool = False
    server_muted: bool = False

    OMIT_DEFAULTS: ClassVar[tuple[str, ...]] = ("server_muted",)


@dataclass(slots=True, frozen=True)
class Bye(Message):
    TYPE = "bye"


@dataclass(slots=True, frozen=True)
class SpeakerReception:
    """What one listener measured of one speaker over its last 10 s (SPEC.md)."""

    user_id: UserId  # the speaker
    loss_percent: Percent  # frames that did not play in time: lost or late
    late_percent: Percent  # of which arrived after their turn
    # The mean run of consecutive lost frames (1: one at a time); absent from older
    # clients, meaning unknown (0).
    burst_mean: BurstMean = 0.0


@dataclass(slots=True, frozen=True)
class Reception(Message):
    """A listener's report, every 2 s, of what it receives from each speaker it hears."""

    TYPE = "reception"
    reports: Annotated[list[SpeakerReception], MaxItems(MAX_RECEPTION)]


@dataclass(slots=True, frozen=True)
class ReceiverReport(Message):
    """The relay's word to a speaker about its current listeners: the worst loss and the
    worst late share any of them reported, and how many reported."""

    TYPE = "receiver_report"
    loss_percent: Percent
    late_percent: Percent
    listeners: Annotated[int, Range(0, MAX_LISTENERS)]
    burst_mean: BurstMean = 0.0  # the longest any counting listener reported


@dataclass(slots=True, frozen=True)
class ChannelInfo:
    """One channel as the relay describes it: ``max_users`` 0 is no limit."""

    name: ChannelName
    description: Annotated[str, Text(max_len=MAX_TEXT, allow_empty=True)] = ""
    max_users: Annotated[int, Range(0, U32_MAX)] = 0


@dataclass(slots=True, frozen=True)
class ChannelList(Message):
    """Every channel, in order, the first the default: sent after each welcome and to
    everyone whenever the operator changes the channels (SPEC.md)."""

    TYPE = "channel_list"
    channels: Annotated[list[ChannelInfo], MaxItems(MAX_LIST)]


@dataclass(slots=True, frozen=True)
class Voice(Message):
    """One voice datagram through the control connection (the TCP tunnel, SPEC.md): the
    very bytes it would be over UDP. Client to relay: sealed, with its relay tag, checked
    as a UDP datagram is. Relay to client: as a UDP listener gets it."""

    TYPE = "voice"
    data: Datagram

    def __repr__(self) -> str:
        return f"Voice({len(self.data)} bytes)"


@dataclass(slots=True, frozen=True)
class Tunnel(Message):
    """Client to relay: deliver the voice this session hears through the control
    connection (``on``), or over UDP again. Lasts as long as the connection."""

    TYPE = "tunnel"
    on: bool


@dataclass(slots=True, frozen=True)
class Error(Message):
    TYPE = "error"
    code: ErrorCode
    message: ErrorText


# --- encoding and decoding ------------------------------------------------------------


def decode_message(body: bytes | bytearray | memoryview) -> Message:
    """Decode one frame body (msgpack map) into its typed message."""
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}", code="too_large")
    try:
        value = msgpack.unpackb(bytes(body), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises a zoo of types on garbage; all mean the same
        raise ProtocolError(f"frame is not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"frame must be a msgpack map, got {type(value).__name__}")
    kind = value.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("frame lacks a string 'type' field")
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown message type {kind[:40]!r}", code="unknown_type")
    return schema.from_map(cls, value, ProtocolError, kind)


def _body(message: Message) -> bytes:
    return msgpack.packb(message.to_map(), use_bin_type=True)


def fits_in_frame(message: Message) -> bool:
    """Whether encode_message() would accept ``message`` (its body is at most MAX_FRAME)."""
    return len(_body(message)) <= MAX_FRAME


def encode_message(message: Message) -> bytes:
    """One complete frame: the u32 length and the msgpack body."""
    body = _body(message)
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"{message.TYPE} message of {len(body)} bytes exceeds {MAX_FRAME}")
    return LENGTH.pack(len(body)) + body


# --- pre-encoded user lists ---------------------------------------------------------------

_PACKER = msgpack.Packer(use_bin_type=True)
_USERS_KEY = msgpack.packb("users", use_bin_type=True)
# Room for a page's head beyond its fields: the users key, a 5-byte array header and
# a map header up to 2 bytes longer for the one more key.
_PAGE_SLACK = len(_USERS_KEY) + 5 + 2


def pack_user(user: UserInfo) -> bytes:
    """One user as msgpack, the way it sits in a ``users`` array: pack once, reuse per page."""
    return msgpack.packb(schema.to_map(user), use_bin_type=True)


def _frame_with_users(head: Message, users: Sequence[bytes]) -> bytes:
    """The frame of ``head`` (its own ``users`` ignored) carrying the packed ``users``."""
    fields = head.to_map()
    fields.pop("users", None)
    parts = [_PACKER.pack_map_header(len(fields) + 1)]
    for key, value in fields.items():
        parts.append(_PACKER.pack(key))
        parts.append(_PACKER.pack(value))
    parts += [_USERS_KEY, _PACKER.pack_array_header(len(users)), *users]
    body = b"".join(parts)
    if len(body) > MAX_FRAME:  # only a head too big by itself (thousands of channels)
        raise ProtocolError(f"{head.TYPE} page of {len(body)} bytes exceeds {MAX_FRAME}")
    return LENGTH.pack(len(body)) + body


def _pages(head_size: int, users: Sequence[bytes]) -> list[Sequence[bytes]]:
    """``users`` cut into runs that fit a frame next to a head of ``head_size`` bytes:
    each run as long as it can be (at least one user, at most MAX_LIST).

    The sizes are summed in C and each cut found by bisection, so a welcome of
    thousands of users costs a few page cuts in Python, not a step per user.
    """
    budget = MAX_FRAME - head_size - _PAGE_SLACK
    if len(users) <= MAX_LIST and sum(map(len, users)) <= budget:
        return [users]  # the common case, summed in C
    ends = list(accumulate(map(len, users)))  # ends[i]: the size of users[: i + 1]
    pages: list[Sequence[bytes]] = []
    start, before = 0, 0  # the run's first user, and the size of all users before it
    while start < len(users):
        stop = bisect_right(ends, before + budget, start, min(len(users), start + MAX_LIST))
        stop = max(stop, start + 1)  # a user larger than a page still gets one
        pages.append(users[start:stop])
        start, before = stop, ends[stop - 1]
    return pages


def _head_size(head: Message) -> int:
    fields = head.to_map()
    fields.pop("users", None)
    return len(msgpack.packb(fields, use_bin_type=True))


def encode_welcome(head: Welcome, users: Sequence[bytes]) -> bytes:
    """A welcome listing every one of ``users`` (from :func:`pack_user`), never cut short:
    what does not fit its frame follows in ``user_list`` pages (SPEC.md)."""
    more = replace(head, users=[], more=True)
    first, *rest = _pages(_head_size(more), users)
    if not rest:
        return _frame_with_users(replace(more, more=False), first)
    frames = [_frame_with_users(more, first)]
    frames += [_frame_with_users(UserList([], False, i == len(rest) - 1), page)
               for i, page in enumerate(rest)]  # fmt: skip
    return b"".join(frames)


def encode_user_list(users: Sequence[bytes]) -> bytes:
    """A snapshot of every one of ``users``: ``user_list`` pages, the first marked ``first``."""
    pages = _pages(_head_size(UserList([], True, True)), users)
    return b"".join(
        _frame_with_users(UserList([], i == 0, i == len(pages) - 1), page)
        for i, page in enumerate(pages)
    )


# --- framing -----------------------------------------------------------------------------


class FrameDecoder:
    """Splits a TCP byte stream, fed in chunks of any size, into frame bodies.

    Memory is bounded by MAX_FRAME plus one chunk: a length prefix above
    MAX_FRAME raises FramingError before anything of that size is allocated,
    and the decoder stays failed because the stream cannot be re-synchronised.
    """

    __slots__ = ("_buf", "_failed")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._failed = False

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[bytes]:
        """Add a chunk; return every frame body completed by it, in order."""
        if self._failed:
            raise FramingError("the stream already failed; close the connection")
        self._buf += chunk
        out: list[bytes] = []
        pos = 0
        buf = self._buf
        while len(buf) - pos >= LENGTH.size:
            (length,) = LENGTH.unpack_from(buf, pos)
            if length > MAX_FRAME:
                self._failed = True
                self._buf = bytearray()
                raise FramingError(f"frame length {length} exceeds the {MAX_FRAME}-byte limit")
            end = pos + LENGTH.size + length
            if len(buf) < end:
                break
            out.append(bytes(buf[pos + LENGTH.size : end]))
            pos = end
        if pos:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Bytes held of a frame not yet complete."""
        return len(self._buf)


class MessageDecoder:
    """FrameDecoder plus message decoding: yields a message or a ProtocolError per frame.

    A bad body inside a well-formed frame is reported in place and the stream
    goes on; a bad length raises FramingError from feed().
    """

    __slots__ = ("_frames",)

    def __init__(self) -> None:
        self._frames = FrameDecoder()

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Message | ProtocolError]:
        """Add a chunk; return the message, or the reason it is bad, of every frame it completes."""
        out: list[Message | ProtocolError] = []
        for body in self._frames.feed(chunk):
            try:
                out.append(decode_message(body))
            except ProtocolError as exc:
                out.append(exc)
        return out
