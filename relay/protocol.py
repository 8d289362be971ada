"""Wire formats shared by the relay and the client (SPEC.md), with no I/O in them.

Two schemas, kept apart as Mumble keeps them apart:

* the UDP voice datagram: a 24-byte big-endian header and one Opus packet;
* the TCP control stream: frames of a u32 big-endian length and a msgpack map
  with a ``type`` key, one dataclass per message type.

Every parser here takes any bytes at all and returns a value or raises
:class:`ProtocolError` with a reason a person can act on; nothing else escapes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import msgpack

# --- UDP voice datagram -------------------------------------------------------

HEADER = struct.Struct(">IQQI")  # token, seq, timestamp, target
HEADER_SIZE = HEADER.size  # 24
MAX_PAYLOAD = 1275  # the largest Opus packet
MAX_DATAGRAM = HEADER_SIZE + MAX_PAYLOAD  # 1299
U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF
TOKEN_OFFSET = 0
TARGET_OFFSET = 20

# Datagram kinds, as returned by classify().
KEEPALIVE = 0
REGISTER = 1
VOICE = 2

# --- TCP control stream -------------------------------------------------------

LENGTH = struct.Struct(">I")
MAX_FRAME = 64 * 1024  # largest msgpack body accepted in one control frame
MAX_NAME = 32  # characters in a user name
MAX_CHANNEL = 64  # characters in a channel name
MAX_TEXT = 2000  # characters in one chat message
MAX_LIST = 4096  # entries in a channel or user list of a welcome


class ProtocolError(ValueError):
    """Bad input from the network: the one error family every parser raises."""

    def __init__(self, message: str, code: str = "bad_message") -> None:
        super().__init__(message)
        self.code = code


class FramingError(ProtocolError):
    """The control stream can no longer be split into frames: close it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="bad_frame")


# --- datagrams -----------------------------------------------------------------


def classify(data: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """Return ``(kind, token, target)`` of a datagram without copying its payload.

    This is the relay's per-datagram check; it allocates only the result tuple.
    Raises ProtocolError for a length that is none of the three kinds.
    """
    n = len(data)
    if n == 0:
        return KEEPALIVE, 0, 0
    if n < HEADER_SIZE:
        raise ProtocolError(f"datagram of {n} bytes is shorter than the {HEADER_SIZE}-byte header")
    if n > MAX_DATAGRAM:
        raise ProtocolError(f"datagram of {n} bytes exceeds the {MAX_DATAGRAM}-byte maximum")
    token, _seq, _ts, target = HEADER.unpack_from(data)
    return (REGISTER if n == HEADER_SIZE else VOICE), token, target


@dataclass(slots=True, frozen=True)
class Keepalive:
    """The 0-byte NAT keepalive: ignored by the relay."""

    def __bytes__(self) -> bytes:
        return b""


@dataclass(slots=True, frozen=True)
class VoiceDatagram:
    """One voice datagram; an empty payload makes it a register ping.

    ``token`` is the sender's secret session token on the way to the relay and
    the speaker's public user id on the way back.
    """

    token: int
    seq: int
    timestamp: int
    target: int = 0
    payload: bytes = b""

    def __post_init__(self) -> None:
        for name, limit in (
            ("token", U32_MAX),
            ("seq", U64_MAX),
            ("timestamp", U64_MAX),
            ("target", U32_MAX),
        ):
            value = getattr(self, name)
            if not 0 <= value <= limit:
                raise ProtocolError(f"{name} {value} does not fit the header field")
        if len(self.payload) > MAX_PAYLOAD:
            raise ProtocolError(
                f"payload of {len(self.payload)} bytes exceeds the {MAX_PAYLOAD}-byte Opus maximum"
            )

    @property
    def is_register(self) -> bool:
        return not self.payload

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> VoiceDatagram:
        kind, _token, _target = classify(data)
        if kind == KEEPALIVE:
            raise ProtocolError("a 0-byte keepalive is not a voice datagram")
        token, seq, timestamp, target = HEADER.unpack_from(data)
        return cls(token, seq, timestamp, target, bytes(data[HEADER_SIZE:]))

    def __bytes__(self) -> bytes:
        return HEADER.pack(self.token, self.seq, self.timestamp, self.target) + self.payload


def parse_datagram(data: bytes | bytearray | memoryview) -> Keepalive | VoiceDatagram:
    """Parse any datagram: a keepalive, a register ping or voice."""
    if len(data) == 0:
        return Keepalive()
    return VoiceDatagram.parse(data)


def pack_header_into(
    buf: bytearray | memoryview, token: int, seq: int, timestamp: int, target: int
) -> None:
    """Write the 24-byte header at the start of ``buf`` (the sender's hot path)."""
    HEADER.pack_into(buf, 0, token, seq, timestamp, target)


# --- control messages ------------------------------------------------------------

_REGISTRY: dict[str, type[Message]] = {}


def _check_int(type_name: str, key: str, value: Any, lo: int, hi: int) -> int:
    # bool is an int in Python but never a valid id or counter on the wire.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{type_name}.{key} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ProtocolError(f"{type_name}.{key}={value} is outside {lo}..{hi}")
    return value


def _check_str(type_name: str, key: str, value: Any, max_len: int, allow_empty: bool) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{type_name}.{key} must be a string, got {type(value).__name__}")
    if len(value) > max_len:
        raise ProtocolError(f"{type_name}.{key} is {len(value)} characters; at most {max_len}")
    if not allow_empty and not value.strip():
        raise ProtocolError(f"{type_name}.{key} must not be empty")
    if any(ord(c) < 0x20 and c not in "\n\t" for c in value):
        raise ProtocolError(f"{type_name}.{key} contains control characters")
    return value


def _check_float(type_name: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{type_name}.{key} must be a number, got {type(value).__name__}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ProtocolError(f"{type_name}.{key} must be finite")
    return float(value)


def _check_list(type_name: str, key: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ProtocolError(f"{type_name}.{key} must be a list, got {type(value).__name__}")
    if len(value) > MAX_LIST:
        raise ProtocolError(f"{type_name}.{key} has {len(value)} entries; at most {MAX_LIST}")
    return value


# Field validators by the name of the field: a name means the same thing in every message.
_FIELD_RULES: dict[str, Callable[[str, Any], Any]] = {
    "name": lambda t, v: _check_str(t, "name", v, MAX_NAME, False),
    "channel": lambda t, v: _check_str(t, "channel", v, MAX_CHANNEL, False),
    "text": lambda t, v: _check_str(t, "text", v, MAX_TEXT, False),
    "code": lambda t, v: _check_str(t, "code", v, 64, False),
    "message": lambda t, v: _check_str(t, "message", v, MAX_TEXT, True),
    "token": lambda t, v: _check_int(t, "token", v, 1, U32_MAX),
    "user_id": lambda t, v: _check_int(t, "user_id", v, 0, U32_MAX),
    "udp_port": lambda t, v: _check_int(t, "udp_port", v, 0, 0xFFFF),
    "nonce": lambda t, v: _check_int(t, "nonce", v, 0, U64_MAX),
    "t": lambda t, v: _check_float(t, "t", v),
    "ts": lambda t, v: _check_float(t, "ts", v),
}


@dataclass(slots=True, frozen=True)
class UserInfo:
    """One user as listed in a welcome snapshot."""

    user_id: int
    name: str
    channel: str

    def to_map(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "name": self.name, "channel": self.channel}

    @classmethod
    def from_map(cls, value: Any) -> UserInfo:
        if not isinstance(value, dict):
            raise ProtocolError(f"welcome.users entries must be maps, got {type(value).__name__}")
        try:
            return cls(
                _FIELD_RULES["user_id"]("user", value["user_id"]),
                _FIELD_RULES["name"]("user", value["name"]),
                _FIELD_RULES["channel"]("user", value["channel"]),
            )
        except KeyError as exc:
            raise ProtocolError(f"welcome.users entry lacks {exc.args[0]!r}") from None


_FIELD_RULES["channels"] = lambda t, v: [
    _check_str(t, "channels[]", c, MAX_CHANNEL, False) for c in _check_list(t, "channels", v)
]
_FIELD_RULES["users"] = lambda t, v: [UserInfo.from_map(u) for u in _check_list(t, "users", v)]


class Message:
    """Base of every control message: ``type`` on the wire, fields from the dataclass."""

    __slots__ = ()

    TYPE: ClassVar[str] = ""
    # Fields that may be absent on the wire (they keep their dataclass default).
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.TYPE:
            _REGISTRY[cls.TYPE] = cls

    def to_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.TYPE}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, list):
                value = [v.to_map() if isinstance(v, UserInfo) else v for v in value]
            out[f.name] = value
        return out

    @classmethod
    def from_map(cls, body: dict[str, Any]) -> Message:
        kwargs: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name not in body:
                if f.name in cls.OPTIONAL:
                    continue
                raise ProtocolError(f"{cls.TYPE} message lacks the field {f.name!r}")
            kwargs[f.name] = cls._check_field(f.name, body[f.name])
        return cls(**kwargs)

    @classmethod
    def _check_field(cls, key: str, value: Any) -> Any:
        return _FIELD_RULES[key](cls.TYPE, value)


@dataclass(slots=True, frozen=True)
class Auth(Message):
    TYPE = "auth"
    name: str


@dataclass(slots=True, frozen=True)
class Reconnect(Message):
    TYPE = "reconnect"
    token: int


@dataclass(slots=True, frozen=True)
class Welcome(Message):
    TYPE = "welcome"
    token: int
    user_id: int
    udp_port: int
    channel: str
    channels: list[str] = field(default_factory=list)
    users: list[UserInfo] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class Join(Message):
    TYPE = "join"
    channel: str


@dataclass(slots=True, frozen=True)
class Chat(Message):
    """Client to relay: only ``text``. Relay to client: all fields, filled by the relay."""

    TYPE = "chat"
    OPTIONAL = frozenset({"user_id", "name", "channel", "ts"})
    text: str
    user_id: int = 0
    name: str = ""
    channel: str = ""
    ts: float = 0.0

    def to_map(self) -> dict[str, Any]:
        if not self.name:  # a client's chat carries the text alone
            return {"type": self.TYPE, "text": self.text}
        return Message.to_map(self)


@dataclass(slots=True, frozen=True)
class Ping(Message):
    TYPE = "ping"
    nonce: int
    t: float


@dataclass(slots=True, frozen=True)
class Pong(Message):
    TYPE = "pong"
    nonce: int
    t: float


@dataclass(slots=True, frozen=True)
class UserJoined(Message):
    TYPE = "user_joined"
    user_id: int
    name: str
    channel: str


@dataclass(slots=True, frozen=True)
class UserLeft(Message):
    TYPE = "user_left"
    user_id: int
    name: str
    channel: str


@dataclass(slots=True, frozen=True)
class Bye(Message):
    TYPE = "bye"


@dataclass(slots=True, frozen=True)
class Error(Message):
    TYPE = "error"
    code: str
    message: str


MESSAGE_TYPES: dict[str, type[Message]] = dict(_REGISTRY)


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
    return cls.from_map(value)


def encode_message(message: Message) -> bytes:
    """One complete frame: the u32 length and the msgpack body."""
    body = msgpack.packb(message.to_map(), use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"{message.TYPE} message of {len(body)} bytes exceeds {MAX_FRAME}")
    return LENGTH.pack(len(body)) + body


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
        out: list[Message | ProtocolError] = []
        for body in self._frames.feed(chunk):
            try:
                out.append(decode_message(body))
            except ProtocolError as exc:
                out.append(exc)
        return out
