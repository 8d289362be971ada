"""relay/protocol/voice_body.py: the layout, every truncation, the limits, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.protocol.errors import ProtocolError
from relay.protocol.voice_body import (
    MAX_BODY,
    MAX_PRIMARY,
    Redundant,
    VoiceBody,
    plain,
)


def test_layout_matches_spec() -> None:
    body = VoiceBody(b"PP", marker=True, redundant=(Redundant(2, b"aaa"), Redundant(1, b"b")))
    raw = bytes(body)
    assert raw[0] == 0x01 | (2 << 1)  # marker, R = 2
    assert raw[1:4] == b"\x02\x00\x03" and raw[4:7] == b"\x01\x00\x01"  # back, length u16
    assert raw[7:] == b"aaabPP"
    assert VoiceBody.parse(raw) == body


def test_a_plain_body_is_one_flag_byte_and_the_frame() -> None:
    assert plain(b"\x78abc") == b"\x00\x78abc"
    assert plain(b"x", marker=True) == b"\x01x"
    assert VoiceBody.parse(plain(b"opus")) == VoiceBody(b"opus")


def test_unknown_flag_bits_are_ignored() -> None:
    assert VoiceBody.parse(b"\xf0opus") == VoiceBody(b"opus")


def test_bit_3_is_the_spurts_end() -> None:
    assert bytes(VoiceBody(b"x", end=True)) == b"\x08x"
    assert VoiceBody.parse(b"\x09x") == VoiceBody(b"x", marker=True, end=True)
    assert not VoiceBody.parse(plain(b"x")).end


@pytest.mark.parametrize("n", range(0, 12))
def test_every_truncation_is_refused_or_shorter(n: int) -> None:
    raw = bytes(VoiceBody(b"PP", redundant=(Redundant(2, b"aaa"), Redundant(1, b"b"))))
    if n < len(raw) - 1:  # cuts into a block header or a redundant frame: no primary left
        with pytest.raises(ProtocolError):
            VoiceBody.parse(raw[:n])
    else:
        assert VoiceBody.parse(raw[:n]).primary == raw[7:n]


def test_an_empty_primary_is_refused() -> None:
    with pytest.raises(ProtocolError, match="primary"):
        VoiceBody.parse(b"\x00")
    with pytest.raises(ProtocolError, match="primary"):
        VoiceBody(b"")


def test_redundant_frames_must_go_oldest_first_and_not_be_empty() -> None:
    with pytest.raises(ProtocolError, match="decrease"):
        VoiceBody(b"p", redundant=(Redundant(1, b"a"), Redundant(2, b"b")))
    with pytest.raises(ProtocolError, match="decrease"):
        VoiceBody.parse(b"\x02\x00\x00\x01ap")  # back 0
    with pytest.raises(ProtocolError, match="empty"):
        VoiceBody.parse(b"\x02\x01\x00\x00p")
    with pytest.raises(ProtocolError, match="at most 3"):
        VoiceBody(b"p", redundant=tuple(Redundant(b, b"x") for b in (4, 3, 2, 1)))


def test_the_body_fits_the_datagram_field() -> None:
    assert len(bytes(VoiceBody(b"x" * MAX_PRIMARY))) == MAX_BODY
    with pytest.raises(ProtocolError, match="exceeds"):
        VoiceBody(b"x" * (MAX_PRIMARY + 1))
    with pytest.raises(ProtocolError, match="exceeds"):
        VoiceBody(b"x" * 1000, redundant=(Redundant(1, b"y" * 300),))
    with pytest.raises(ProtocolError, match="exceeds"):
        VoiceBody.parse(b"\x00" + b"x" * MAX_BODY)


def test_a_block_length_past_the_end_is_refused() -> None:
    with pytest.raises(ProtocolError, match="overruns"):
        VoiceBody.parse(b"\x02\x01\x00\x05abcp")


opus = st.binary(min_size=1, max_size=200)


@given(
    primary=opus,
    marker=st.booleans(),
    copies=st.lists(opus, max_size=3),
    end=st.booleans(),
)
def test_round_trip(primary: bytes, marker: bool, copies: list[bytes], end: bool) -> None:
    redundant = tuple(Redundant(len(copies) - i, c) for i, c in enumerate(copies))
    body = VoiceBody(primary, marker, redundant, end)
    assert VoiceBody.parse(bytes(body)) == body
    assert len(bytes(body)) == body.size


@given(st.binary(max_size=MAX_BODY + 5))
def test_fuzz_any_bytes_give_a_body_or_our_error(data: bytes) -> None:
    try:
        body = VoiceBody.parse(data)
    except ProtocolError:
        return
    assert body.primary and body.size == len(data)
    assert VoiceBody.parse(bytes(body)).primary == body.primary
