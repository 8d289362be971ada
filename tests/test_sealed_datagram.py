"""relay/protocol/sealed_datagram.py: the protocol-2 header layout, every length, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.protocol.errors import ProtocolError
from relay.protocol.sealed_datagram import (
    HEADER_SIZE,
    KIND_PING,
    KIND_VOICE,
    MAX_DATAGRAM,
    MIN_VOICE_UP,
    PING_SIZE,
    SealedHeader,
    check_up_length,
    nonce_of,
)


def test_header_layout_matches_spec() -> None:
    raw = bytes(SealedHeader(KIND_VOICE, 3, 0x01020304, 5, 9))
    assert raw[0] == 2 and raw[1] == KIND_VOICE and raw[2] == 3
    assert raw[3:7] == b"\x01\x02\x03\x04"
    assert raw[7:15] == (5).to_bytes(8, "big")
    assert raw[15:19] == (9).to_bytes(4, "big")
    assert HEADER_SIZE == 19 and PING_SIZE == 43 and MAX_DATAGRAM == 1342
    assert nonce_of(raw) == raw[3:15] == SealedHeader.parse(raw).nonce


@pytest.mark.parametrize("n", range(HEADER_SIZE))
def test_every_truncated_header_is_rejected(n: int) -> None:
    with pytest.raises(ProtocolError, match="header"):
        SealedHeader.parse(bytes(SealedHeader(KIND_PING, 0, 1, 1))[:n])


def test_a_protocol_1_datagram_is_a_version_error() -> None:
    old = (0xDEADBEEF).to_bytes(4, "big") + bytes(20)  # a token where the version is
    with pytest.raises(ProtocolError) as exc:
        SealedHeader.parse(old)
    assert exc.value.code == "bad_version"


def test_unknown_kind_and_out_of_range_fields_are_refused() -> None:
    with pytest.raises(ProtocolError, match="kind"):
        SealedHeader.parse(b"\x02\x07" + bytes(17))
    with pytest.raises(ProtocolError):
        SealedHeader(KIND_VOICE, 256, 1, 1)
    with pytest.raises(ProtocolError):
        SealedHeader(KIND_VOICE, 0, 2**32, 1)


def test_up_lengths_at_their_edges() -> None:
    check_up_length(KIND_PING, PING_SIZE)
    for n in (PING_SIZE - 1, PING_SIZE + 1):
        with pytest.raises(ProtocolError):
            check_up_length(KIND_PING, n)
    check_up_length(KIND_VOICE, MIN_VOICE_UP)
    check_up_length(KIND_VOICE, MAX_DATAGRAM)
    for n in (MIN_VOICE_UP - 1, MAX_DATAGRAM + 1):
        with pytest.raises(ProtocolError):
            check_up_length(KIND_VOICE, n)


@given(st.binary(max_size=64))
def test_fuzz_any_bytes_give_a_header_or_our_error(data: bytes) -> None:
    try:
        h = SealedHeader.parse(data)
    except ProtocolError:
        return
    assert bytes(h) == data[:HEADER_SIZE]


@given(
    st.sampled_from([KIND_PING, KIND_VOICE]),
    st.integers(0, 255),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
)
def test_round_trip(kind: int, key: int, sid: int, ctr: int, target: int) -> None:
    h = SealedHeader(kind, key, sid, ctr, target)
    assert SealedHeader.parse(bytes(h)) == h
