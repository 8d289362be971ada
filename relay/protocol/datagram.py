"""The UDP voice datagram (SPEC.md): a 24-byte big-endian header and one Opus packet.

Three lengths mean three kinds: 0 bytes is a NAT keepalive (ignored), the bare
header is a register ping, the header and 1..1275 payload bytes are voice.
Every parser here takes any bytes at all and returns a value or raises
:class:`~relay.protocol.errors.ProtocolError`; nothing else escapes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from relay.protocol.errors import ProtocolError
from relay.protocol.widths import U32_MAX, U64_MAX

HEADER = struct.Struct(">IQQI")  # token, seq, timestamp, target
HEADER_SIZE = HEADER.size  # 24
MAX_PAYLOAD = 1275  # the largest Opus packet
MAX_DATAGRAM = HEADER_SIZE + MAX_PAYLOAD  # 1299
TOKEN_OFFSET = 0
TARGET_OFFSET = 20

# Datagram kinds, as returned by classify().
KEEPALIVE = 0
REGISTER = 1
VOICE = 2


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
        """A register ping or voice; ProtocolError for a keepalive or a bad length."""
        kind, _token, _target = classify(data)
        if kind == KEEPALIVE:
            raise ProtocolError("a 0-byte keepalive is not a voice datagram")
        token, seq, timestamp, target = HEADER.unpack_from(data)
        return cls(token, seq, timestamp, target, bytes(data[HEADER_SIZE:]))

    def __bytes__(self) -> bytes:
        return HEADER.pack(self.token, self.seq, self.timestamp, self.target) + self.payload


def pack_header_into(
    buf: bytearray | memoryview, token: int, seq: int, timestamp: int, target: int
) -> None:
    """Write the 24-byte header at the start of ``buf`` (the sender's hot path)."""
    HEADER.pack_into(buf, 0, token, seq, timestamp, target)
