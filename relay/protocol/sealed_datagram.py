"""The protocol-2 UDP datagram (SPEC.md, "Voice datagram, protocol 2"): wire layout only.

A 19-byte big-endian header in the clear, which the relay routes on and every
receiver authenticates as associated data, then a body:

* voice: the AES-GCM ciphertext of ``seq | media | opus`` under the sender's
  channel media key (nonce ``sid | ctr``), and, on the way to the relay only, a
  16-byte relay tag (keyed BLAKE2b under the session's own key) that the relay
  checks and strips;
* register ping: the sender's timestamp (8 bytes) and the relay tag; the relay's
  answer carries the same fields under the session's key for the other direction.

No field is a secret: ``sid`` is the sender's public user id. Every parser here
takes any bytes and returns a value or raises
:class:`~relay.protocol.errors.ProtocolError`; the cryptography is in
:mod:`relay.protocol.voice_crypto`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from relay.protocol.errors import ProtocolError
from relay.protocol.widths import U32_MAX, U64_MAX

VERSION = 2
HEADER = struct.Struct(">BBBIQI")  # version, kind, key id, sid, ctr, target
HEADER_SIZE = HEADER.size  # 19
KIND_PING = 1
KIND_VOICE = 2
KINDS = (KIND_PING, KIND_VOICE)
TAG_SIZE = 16  # the relay tag: keyed BLAKE2b-128
GCM_TAG_SIZE = 16
MEDIA_HEAD = struct.Struct(">QQ")  # inside the ciphertext: frame seq, media timestamp
STAMP = struct.Struct(">Q")  # a ping's timestamp
MAX_OPUS = 1275
# Voice on its way to the relay: header, sealed (media head, opus), GCM tag, relay tag.
MIN_SEALED = MEDIA_HEAD.size + 1 + GCM_TAG_SIZE
MAX_SEALED = MEDIA_HEAD.size + MAX_OPUS + GCM_TAG_SIZE
PING_SIZE = HEADER_SIZE + STAMP.size + TAG_SIZE  # 43
MIN_VOICE_UP = HEADER_SIZE + MIN_SEALED + TAG_SIZE
MAX_DATAGRAM = HEADER_SIZE + MAX_SEALED + TAG_SIZE  # 1342
KIND_OFFSET = 1
KEY_OFFSET = 2
SID_OFFSET = 3
CTR_OFFSET = 7
TARGET_OFFSET = 15
NONCE_SIZE = 12  # sid (4) and ctr (8), straight from the header


@dataclass(slots=True, frozen=True)
class SealedHeader:
    """The clear header of a protocol-2 datagram."""

    kind: int
    key_id: int
    sid: int
    ctr: int
    target: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ProtocolError(f"datagram kind {self.kind} is neither ping (1) nor voice (2)")
        for name, limit in (("key_id", 0xFF), ("sid", U32_MAX), ("ctr", U64_MAX),
                            ("target", U32_MAX)):  # fmt: skip
            value = getattr(self, name)
            if not 0 <= value <= limit:
                raise ProtocolError(f"{name} {value} does not fit the header field")

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> SealedHeader:
        """The header at the start of ``data``; ProtocolError for a bad version, kind
        or length (a ping must be exactly PING_SIZE on the way up, voice in range)."""
        n = len(data)
        if n < HEADER_SIZE:
            raise ProtocolError(f"datagram of {n} bytes; the header alone is {HEADER_SIZE}")
        version, kind, key_id, sid, ctr, target = HEADER.unpack_from(data)
        if version != VERSION:
            raise ProtocolError(
                f"datagram of protocol version {version}; this side speaks {VERSION}",
                code="bad_version",
            )
        return cls(kind, key_id, sid, ctr, target)

    def __bytes__(self) -> bytes:
        return HEADER.pack(VERSION, self.kind, self.key_id, self.sid, self.ctr, self.target)

    @property
    def nonce(self) -> bytes:
        """The AES-GCM nonce of this datagram: sid and ctr, unique per sender and key."""
        return bytes(self)[SID_OFFSET:TARGET_OFFSET]


def nonce_of(data: bytes | bytearray | memoryview) -> bytes:
    """The nonce of a datagram whose header is at the start of ``data``."""
    return bytes(data[SID_OFFSET:TARGET_OFFSET])


def check_up_length(kind: int, n: int) -> None:
    """ProtocolError unless ``n`` is a valid length for a client-to-relay datagram of ``kind``."""
    if kind == KIND_PING:
        if n != PING_SIZE:
            raise ProtocolError(f"ping of {n} bytes; a ping is {PING_SIZE}")
    elif not MIN_VOICE_UP <= n <= MAX_DATAGRAM:
        raise ProtocolError(f"voice of {n} bytes, outside {MIN_VOICE_UP}..{MAX_DATAGRAM}")
