"""relay/protocol/datagram.py: every length at the boundaries, the header layout, fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.protocol.datagram import (
    HEADER_SIZE,
    KEEPALIVE,
    MAX_DATAGRAM,
    REGISTER,
    VOICE,
    VoiceDatagram,
    classify,
    pack_header_into,
)
from relay.protocol.errors import ProtocolError


def header(token: int = 7, seq: int = 1, ts: int = 2, target: int = 0) -> bytes:
    return struct.pack(">IQQI", token, seq, ts, target)


def test_header_layout_matches_spec() -> None:
    d = VoiceDatagram(token=0x01020304, seq=5, timestamp=6, target=9, payload=b"\xaa")
    raw = bytes(d)
    assert raw[0:4] == b"\x01\x02\x03\x04"
    assert raw[4:12] == (5).to_bytes(8, "big")
    assert raw[12:20] == (6).to_bytes(8, "big")
    assert raw[20:24] == (9).to_bytes(4, "big")
    assert raw[24:] == b"\xaa"
    assert HEADER_SIZE == 24 and MAX_DATAGRAM == 1299


def test_zero_bytes_is_keepalive() -> None:
    assert classify(b"") == (KEEPALIVE, 0, 0)
    with pytest.raises(ProtocolError, match="keepalive"):
        VoiceDatagram.parse(b"")


@pytest.mark.parametrize("n", range(1, 24))
def test_every_truncated_header_is_rejected(n: int) -> None:
    with pytest.raises(ProtocolError, match="shorter than"):
        classify(header()[:n])
    with pytest.raises(ProtocolError, match="shorter than"):
        VoiceDatagram.parse(header()[:n])


def test_header_only_is_register_ping() -> None:
    d = VoiceDatagram.parse(header(token=42))
    assert d.is_register and d.token == 42
    assert classify(header(token=42)) == (REGISTER, 42, 0)


def test_one_payload_byte_is_voice() -> None:
    d = VoiceDatagram.parse(header(target=3) + b"x")
    assert not d.is_register and d.payload == b"x"
    assert classify(header(token=1, target=3) + b"x") == (VOICE, 1, 3)


def test_1299_accepted_1300_rejected() -> None:
    d = VoiceDatagram.parse(header() + b"\1" * 1275)
    assert len(d.payload) == 1275
    with pytest.raises(ProtocolError, match="exceeds"):
        VoiceDatagram.parse(header() + b"\1" * 1276)
    with pytest.raises(ProtocolError, match="exceeds"):
        classify(header() + b"\1" * 1276)


def test_datagram_field_ranges_checked_on_build() -> None:
    with pytest.raises(ProtocolError):
        VoiceDatagram(token=2**32, seq=0, timestamp=0)
    with pytest.raises(ProtocolError):
        VoiceDatagram(token=1, seq=-1, timestamp=0)
    with pytest.raises(ProtocolError):
        VoiceDatagram(token=1, seq=0, timestamp=0, payload=b"x" * 1276)


def test_pack_header_into_writes_in_place() -> None:
    buf = bytearray(30)
    pack_header_into(buf, 1, 2, 3, 4)
    assert bytes(buf[:24]) == header(1, 2, 3, 4)


def test_parse_accepts_memoryview() -> None:
    raw = bytearray(header() + b"abc")
    d = VoiceDatagram.parse(memoryview(raw))
    assert d.payload == b"abc"


@given(st.binary(max_size=1400))
def test_fuzz_any_bytes_classify_or_protocol_error(data: bytes) -> None:
    try:
        kind, _token, _target = classify(data)
    except ProtocolError:
        assert not 24 <= len(data) <= 1299 and len(data) != 0
        return
    if kind == KEEPALIVE:
        assert data == b""
        return
    assert bytes(VoiceDatagram.parse(data)) == data


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=1275),
)
def test_fuzz_datagram_round_trip(
    token: int, seq: int, ts: int, target: int, payload: bytes
) -> None:
    d = VoiceDatagram(token, seq, ts, target, payload)
    assert VoiceDatagram.parse(bytes(d)) == d
    kind = REGISTER if not payload else VOICE
    assert classify(bytes(d)) == (kind, token, target)
