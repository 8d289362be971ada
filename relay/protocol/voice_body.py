"""The voice body (SPEC.md, "Voice body"): what one voice datagram's Opus field holds.

The relay never looks inside it (it forwards the payload, sealed or not, as is);
only clients build and read it::

    flags u8 | R blocks of (back u8, length u16) | R redundant Opus frames | primary Opus frame

``flags`` bit 0 is the talk-spurt marker (this packet starts a spurt: the pause
before it is not loss), bits 1-2 are R, the number of redundant copies of
earlier frames (RFC 2198 in spirit): the copy ``back`` frames before this one
(sequence number ``seq - back``, media timestamp ``media - back * 960``), oldest
first; bit 3 is the spurt's end (this packet is its last: the silence after it is
not a loss to conceal). The other bits are 0 when sent and ignored when received. The whole body
fits the datagram's 1,275-byte Opus field, so the primary frame is at most 1,274
bytes. Every parser here takes any bytes and returns a value or raises
:class:`~relay.protocol.errors.ProtocolError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from relay.protocol.errors import ProtocolError

MAX_BODY = 1275  # the datagram's Opus field (protocol 1 payload, protocol 2 sealed opus)
FLAGS_SIZE = 1
BLOCK = struct.Struct(">BH")  # back, length
FLAG_MARKER = 0x01
FLAG_END = 0x08
RED_SHIFT = 1
RED_MASK = 0x03  # after the shift
MAX_REDUNDANT = 3
MAX_PRIMARY = MAX_BODY - FLAGS_SIZE  # 1274


@dataclass(slots=True, frozen=True)
class Redundant:
    """A copy of the frame ``back`` packets before the one that carries it."""

    back: int
    opus: bytes


@dataclass(slots=True, frozen=True)
class VoiceBody:
    primary: bytes
    marker: bool = False
    redundant: tuple[Redundant, ...] = ()
    end: bool = False  # the last packet of its talk spurt

    def __post_init__(self) -> None:
        if not self.primary:
            raise ProtocolError("a voice body needs a primary Opus frame of at least 1 byte")
        if len(self.redundant) > MAX_REDUNDANT:
            raise ProtocolError(
                f"{len(self.redundant)} redundant frames: at most {MAX_REDUNDANT} fit the flags"
            )
        last = 256
        for r in self.redundant:
            if not 1 <= r.back < last:
                raise ProtocolError(
                    f"redundant frame {r.back} back: must be 1..255 and decrease, oldest first"
                )
            if not r.opus:
                raise ProtocolError(f"redundant frame {r.back} back is empty")
            last = r.back
        if self.size > MAX_BODY:
            raise ProtocolError(
                f"voice body of {self.size} bytes exceeds the {MAX_BODY}-byte field"
            )

    @property
    def size(self) -> int:
        return (
            FLAGS_SIZE + sum(BLOCK.size + len(r.opus) for r in self.redundant) + len(self.primary)
        )

    def __bytes__(self) -> bytes:
        flags = (FLAG_MARKER if self.marker else 0) | (len(self.redundant) << RED_SHIFT)
        flags |= FLAG_END if self.end else 0
        head = bytearray((flags,))
        for r in self.redundant:
            head += BLOCK.pack(r.back, len(r.opus))
        return b"".join((bytes(head), *(r.opus for r in self.redundant), self.primary))

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> VoiceBody:
        n = len(data)
        if n < FLAGS_SIZE + 1:
            raise ProtocolError(f"voice body of {n} bytes: needs the flags and a primary frame")
        if n > MAX_BODY:
            raise ProtocolError(f"voice body of {n} bytes exceeds the {MAX_BODY}-byte field")
        flags = data[0]
        count = (flags >> RED_SHIFT) & RED_MASK
        at = FLAGS_SIZE + count * BLOCK.size
        if at >= n:
            raise ProtocolError(
                f"voice body of {n} bytes cannot hold {count} redundant block headers and a frame"
            )
        blocks = [BLOCK.unpack_from(data, FLAGS_SIZE + i * BLOCK.size) for i in range(count)]
        redundant = []
        for back, length in blocks:
            if at + length >= n:
                raise ProtocolError(
                    f"redundant frame {back} back of {length} bytes overruns the {n}-byte body"
                )
            redundant.append(Redundant(back, bytes(data[at : at + length])))
            at += length
        return cls(
            bytes(data[at:]), bool(flags & FLAG_MARKER), tuple(redundant), bool(flags & FLAG_END)
        )


def plain(opus: bytes | bytearray | memoryview, marker: bool = False) -> bytes:
    """The body of one Opus frame with no redundancy (the common case), as bytes."""
    return bytes(((FLAG_MARKER if marker else 0),)) + bytes(opus)
