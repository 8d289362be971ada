"""relay/protocol/mesh_datagram.py: the relay-to-relay datagram, byte for byte."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.protocol.errors import ProtocolError
from relay.protocol.mesh_datagram import (
    HEADER_SIZE,
    MAX_INNER,
    MIN_INNER,
    TAG_SIZE,
    MeshDatagram,
    mesh_key,
)

KEY = mesh_key(b"sixteen bytes at least")
INNER = bytes([2, 2, 1]) + bytes(16) + b"sealed body"


def test_round_trip_and_layout() -> None:
    d = MeshDatagram(7, 123456789, INNER)
    wire = d.seal(KEY)
    assert len(wire) == HEADER_SIZE + len(INNER) + TAG_SIZE
    assert wire[:2] == bytes([0xC7, 1]) and wire[2:6] == (7).to_bytes(4, "big")
    assert wire[HEADER_SIZE:-TAG_SIZE] == INNER  # carried unchanged
    assert MeshDatagram.open(wire, KEY) == d


def test_wrong_or_missing_secret_is_bad_auth() -> None:
    wire = MeshDatagram(1, 1, INNER).seal(mesh_key(b"another secret, also long"))
    with pytest.raises(ProtocolError) as exc:
        MeshDatagram.open(wire, KEY)
    assert exc.value.code == "bad_auth"
    with pytest.raises(ProtocolError):
        MeshDatagram.open(wire[:-TAG_SIZE] + bytes(TAG_SIZE), KEY)


def test_every_flipped_bit_and_every_truncation_is_refused() -> None:
    wire = MeshDatagram(1, 1, INNER).seal(KEY)
    for i in range(len(wire) * 8):
        bad = bytearray(wire)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(ProtocolError):
            MeshDatagram.open(bytes(bad), KEY)
    for n in range(len(wire)):
        with pytest.raises(ProtocolError):
            MeshDatagram.open(wire[:n], KEY)


def test_a_short_secret_and_bad_fields_are_refused() -> None:
    with pytest.raises(ValueError):
        mesh_key(b"short")
    for relay, ctr, inner in ((0, 1, INNER), (1, -1, INNER), (1, 1, b"x"),
                              (1, 1, bytes(MAX_INNER + 1))):  # fmt: skip
        with pytest.raises(ProtocolError):
            MeshDatagram(relay, ctr, inner)


@given(st.integers(1, 2**32 - 1), st.integers(0, 2**64 - 1),
       st.binary(min_size=MIN_INNER, max_size=MAX_INNER))  # fmt: skip
def test_any_datagram_round_trips(relay: int, ctr: int, inner: bytes) -> None:
    d = MeshDatagram(relay, ctr, inner)
    assert MeshDatagram.open(d.seal(KEY), KEY) == d


@given(st.binary(max_size=1500))
def test_any_bytes_give_a_datagram_or_our_error(data: bytes) -> None:
    for candidate in (data, bytes([0xC7, 1]) + data):
        with contextlib.suppress(ProtocolError):
            MeshDatagram.open(candidate, KEY)
