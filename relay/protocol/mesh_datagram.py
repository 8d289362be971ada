"""The relay-to-relay datagram of a cluster (SPEC.md, "Cluster mesh datagram"): wire only.

A voice datagram that a relay forwards to another relay of its cluster travels
wrapped: a 14-byte header, the protocol-2 voice datagram exactly as the relay's
own listeners get it (its header names the speaker's public user id, ``sid``, and
the channel's media key id; the body stays sealed end to end), and a 16-byte
cluster tag, keyed BLAKE2b over header and datagram under a key derived from the
cluster secret. Nobody without the secret can inject into the mesh; ``ctr``
rises with every datagram a relay sends, so a receiver's replay window per
sending relay refuses a datagram seen before.

The first byte (``MESH_MAGIC``) is not protocol 2's version byte, which every
client datagram starts with (a cluster runs protocol 2 only), so one UDP port
takes both without ambiguity.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from relay.protocol.errors import ProtocolError
from relay.protocol.sealed_datagram import HEADER_SIZE as VOICE_HEADER_SIZE
from relay.protocol.sealed_datagram import MAX_DATAGRAM as MAX_VOICE_UP
from relay.protocol.sealed_datagram import TAG_SIZE as VOICE_TAG_SIZE
from relay.protocol.widths import U32_MAX, U64_MAX

MESH_MAGIC = 0xC7
MESH_VERSION = 1
HEADER = struct.Struct(">BBIQ")  # magic, version, sending relay's mesh number, ctr
HEADER_SIZE = HEADER.size  # 14
TAG_SIZE = 16
# The wrapped datagram is a relay's outgoing voice: the client's, minus its relay tag.
MAX_INNER = MAX_VOICE_UP - VOICE_TAG_SIZE
MIN_INNER = VOICE_HEADER_SIZE + 1
MIN_SIZE = HEADER_SIZE + MIN_INNER + TAG_SIZE
MAX_SIZE = HEADER_SIZE + MAX_INNER + TAG_SIZE
KEY_PERSON = b"vc-mesh-tag"  # BLAKE2b personalisation of the tag key's derivation
MIN_SECRET = 16  # bytes of cluster secret accepted


def mesh_key(secret: bytes) -> bytes:
    """The tag key of every mesh datagram, derived from the cluster secret."""
    if len(secret) < MIN_SECRET:
        raise ValueError(f"a cluster secret needs at least {MIN_SECRET} bytes")
    return hashlib.blake2b(secret, digest_size=32, person=KEY_PERSON).digest()


def mesh_tag(key: bytes, data: bytes | bytearray | memoryview) -> bytes:
    return hashlib.blake2b(data, key=key, digest_size=TAG_SIZE).digest()


@dataclass(slots=True, frozen=True)
class MeshDatagram:
    """One relay-to-relay datagram: who sent it, its counter, the voice it carries."""

    relay: int
    ctr: int
    inner: bytes

    def __post_init__(self) -> None:
        if not 1 <= self.relay <= U32_MAX:
            raise ProtocolError(f"relay number {self.relay} does not fit the header")
        if not 0 <= self.ctr <= U64_MAX:
            raise ProtocolError(f"ctr {self.ctr} does not fit the header")
        if not MIN_INNER <= len(self.inner) <= MAX_INNER:
            raise ProtocolError(
                f"a mesh datagram carries {MIN_INNER}..{MAX_INNER} bytes, not {len(self.inner)}"
            )

    def seal(self, key: bytes) -> bytes:
        """The datagram on the wire, tagged under ``key`` (:func:`mesh_key`)."""
        body = HEADER.pack(MESH_MAGIC, MESH_VERSION, self.relay, self.ctr) + self.inner
        return body + mesh_tag(key, body)

    @classmethod
    def open(cls, data: bytes | bytearray | memoryview, key: bytes) -> MeshDatagram:
        """The datagram in ``data`` if its tag is right under ``key``; else ProtocolError
        with a code naming the reason (``bad_length``, ``bad_version``, ``bad_auth``)."""
        n = len(data)
        if not MIN_SIZE <= n <= MAX_SIZE:
            raise ProtocolError(
                f"a mesh datagram is {MIN_SIZE}..{MAX_SIZE} bytes, not {n}", code="bad_length"
            )
        magic, version, relay, ctr = HEADER.unpack_from(data)
        if magic != MESH_MAGIC or version != MESH_VERSION:
            raise ProtocolError(
                f"not a mesh datagram of version {MESH_VERSION} ({magic:#x}, {version})",
                code="bad_version",
            )
        view = memoryview(data)
        if not hmac.compare_digest(mesh_tag(key, view[: n - TAG_SIZE]), view[n - TAG_SIZE :]):
            raise ProtocolError("the cluster tag does not authenticate", code="bad_auth")
        if relay == 0:
            raise ProtocolError("relay number 0 is never given out", code="bad_version")
        return cls(relay, ctr, bytes(view[HEADER_SIZE : n - TAG_SIZE]))
