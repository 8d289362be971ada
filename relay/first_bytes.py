"""What a new connection on a TLS relay's control port is, from its first bytes; sans-I/O.

A protocol-2 client opens with a TLS record: a ClientHello, whose first byte is the
handshake record type, 0x16. A protocol-1 client (plain TCP, SPEC.md "Protocol
versions") opens with a control frame: a u32 big-endian length, which is at most
MAX_FRAME (64 KiB), so its first byte is 0x00. One byte tells them apart.

Everything that does not start with 0x00 goes on to TLS, as before this module
existed: a TLS client is never held back by the sniffing, and garbage fails the
handshake as it did. What starts with 0x00 is read as one protocol-1 frame, at most
PLAIN_LIMIT bytes: if it decodes to a control message, the answer is an ``error
bad_version`` in protocol-1 framing, saying this relay needs protocol 2 and TLS (no
secret in it); if not, nothing is answered. Either way the connection is closed.
"""

from __future__ import annotations

import enum

from relay.protocol.errors import ProtocolError
from relay.protocol.messages import (
    LENGTH,
    PROTOCOL,
    PROTOCOL_INSECURE,
    Error,
    decode_message,
    encode_message,
)

TLS_HANDSHAKE = 0x16  # TLS record type of a ClientHello
# The largest first frame an old client is answered for: its auth (a name of 32
# characters and a password of 256, in UTF-8) fits many times over.
PLAIN_LIMIT = 4096

UPGRADE = Error(
    code="bad_version",
    message=(
        f"this relay speaks protocol {PROTOCOL}: TLS on the control connection and sealed "
        f"voice; your client speaks protocol {PROTOCOL_INSECURE} (plain TCP): upgrade it"
    ),
)


class Hello(enum.Enum):
    """What the first byte of a connection says it is."""

    TLS = "tls"  # hand it to TLS (a ClientHello, or anything not protocol 1)
    PLAIN = "plain"  # a protocol-1 control frame, perhaps: read it and answer


def classify(first: int) -> Hello:
    """What a connection whose first byte is ``first`` (0..255) goes on to."""
    if not 0 <= first <= 0xFF:
        raise ValueError(f"a byte is 0..255, not {first}")
    return Hello.PLAIN if first == 0 else Hello.TLS


class Verdict(enum.Enum):
    """What :meth:`PlainHello.feed` decided."""

    MORE = "more"  # the frame is not complete: feed more
    OLD_CLIENT = "old_protocol"  # a protocol-1 message: send :attr:`PlainHello.reply`, close
    NOT_PROTOCOL = "not_tls"  # neither TLS nor a protocol-1 frame: close without a word


class PlainHello:
    """The first frame of a connection that started with 0x00, fed in chunks of any size.

    Holds at most PLAIN_LIMIT bytes; any bytes give a verdict, never an exception.
    """

    __slots__ = ("_buf", "verdict")

    def __init__(self) -> None:
        self._buf = bytearray()
        self.verdict = Verdict.MORE

    @property
    def reply(self) -> bytes:
        """The bytes to send before closing: the ``bad_version`` frame, or nothing."""
        return encode_message(UPGRADE) if self.verdict is Verdict.OLD_CLIENT else b""

    def feed(self, chunk: bytes | bytearray | memoryview) -> Verdict:
        """Add bytes read from the connection; the verdict so far (final once not MORE)."""
        if self.verdict is not Verdict.MORE:
            return self.verdict
        self._buf += chunk[: PLAIN_LIMIT + LENGTH.size - len(self._buf)]
        buf = self._buf
        if len(buf) < LENGTH.size:
            return self.verdict
        (length,) = LENGTH.unpack_from(buf)
        if length == 0 or length > PLAIN_LIMIT:
            self.verdict = Verdict.NOT_PROTOCOL
        elif len(buf) >= LENGTH.size + length:
            try:
                decode_message(bytes(buf[LENGTH.size : LENGTH.size + length]))
            except ProtocolError:
                self.verdict = Verdict.NOT_PROTOCOL
            else:
                self.verdict = Verdict.OLD_CLIENT
        if self.verdict is not Verdict.MORE:
            self._buf = bytearray()
        return self.verdict
