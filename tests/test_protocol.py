"""relay/protocol.py: datagram boundaries, every control message, and fuzzing."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import protocol as p

# --- datagram fixtures -----------------------------------------------------------


def header(token: int = 7, seq: int = 1, ts: int = 2, target: int = 0) -> bytes:
    return struct.pack(">IQQI", token, seq, ts, target)


def test_header_layout_matches_spec() -> None:
    d = p.VoiceDatagram(token=0x01020304, seq=5, timestamp=6, target=9, payload=b"\xaa")
    raw = bytes(d)
    assert raw[0:4] == b"\x01\x02\x03\x04"
    assert raw[4:12] == (5).to_bytes(8, "big")
    assert raw[12:20] == (6).to_bytes(8, "big")
    assert raw[20:24] == (9).to_bytes(4, "big")
    assert raw[24:] == b"\xaa"
    assert p.HEADER_SIZE == 24 and p.MAX_DATAGRAM == 1299


def test_zero_bytes_is_keepalive() -> None:
    assert p.parse_datagram(b"") == p.Keepalive()
    assert p.classify(b"") == (p.KEEPALIVE, 0, 0)
    assert bytes(p.Keepalive()) == b""
    with pytest.raises(p.ProtocolError):
        p.VoiceDatagram.parse(b"")


@pytest.mark.parametrize("n", range(1, 24))
def test_every_truncated_header_is_rejected(n: int) -> None:
    with pytest.raises(p.ProtocolError, match="shorter than"):
        p.parse_datagram(header()[:n])


def test_header_only_is_register_ping() -> None:
    d = p.parse_datagram(header(token=42))
    assert isinstance(d, p.VoiceDatagram) and d.is_register and d.token == 42
    assert p.classify(header(token=42)) == (p.REGISTER, 42, 0)


def test_one_payload_byte_is_voice() -> None:
    d = p.parse_datagram(header(target=3) + b"x")
    assert isinstance(d, p.VoiceDatagram) and not d.is_register and d.payload == b"x"
    assert p.classify(header(token=1, target=3) + b"x") == (p.VOICE, 1, 3)


def test_1299_accepted_1300_rejected() -> None:
    d = p.parse_datagram(header() + b"\1" * 1275)
    assert isinstance(d, p.VoiceDatagram) and len(d.payload) == 1275
    with pytest.raises(p.ProtocolError, match="exceeds"):
        p.parse_datagram(header() + b"\1" * 1276)
    with pytest.raises(p.ProtocolError, match="exceeds"):
        p.classify(header() + b"\1" * 1276)


def test_datagram_field_ranges_checked_on_build() -> None:
    with pytest.raises(p.ProtocolError):
        p.VoiceDatagram(token=2**32, seq=0, timestamp=0)
    with pytest.raises(p.ProtocolError):
        p.VoiceDatagram(token=1, seq=-1, timestamp=0)
    with pytest.raises(p.ProtocolError):
        p.VoiceDatagram(token=1, seq=0, timestamp=0, payload=b"x" * 1276)


def test_pack_header_into_writes_in_place() -> None:
    buf = bytearray(30)
    p.pack_header_into(buf, 1, 2, 3, 4)
    assert bytes(buf[:24]) == header(1, 2, 3, 4)


def test_parse_accepts_memoryview() -> None:
    raw = bytearray(header() + b"abc")
    d = p.VoiceDatagram.parse(memoryview(raw))
    assert d.payload == b"abc"


# --- control messages ------------------------------------------------------------

EVERY_MESSAGE: list[p.Message] = [
    p.Auth(name="alice"),
    p.Reconnect(token=0xDEADBEEF),
    p.Welcome(
        token=9,
        user_id=3,
        udp_port=8080,
        channel="Lobby",
        channels=["Lobby", "Games"],
        users=[p.UserInfo(3, "alice", "Lobby"), p.UserInfo(4, "bob", "Games")],
    ),
    p.Join(channel="Games"),
    p.Chat(text="hello"),
    p.Chat(text="hello", user_id=3, name="alice", channel="Lobby", ts=1700000000.5),
    p.Ping(nonce=1, t=2.5),
    p.Pong(nonce=1, t=2.5),
    p.UserJoined(user_id=4, name="bob", channel="Lobby"),
    p.UserLeft(user_id=4, name="bob", channel="Lobby"),
    p.Bye(),
    p.Error(code="unknown_token", message="session expired"),
]


def test_every_spec_type_has_a_message() -> None:
    spec_types = {
        "auth",
        "reconnect",
        "welcome",
        "join",
        "chat",
        "ping",
        "pong",
        "user_joined",
        "user_left",
        "bye",
        "error",
    }
    assert set(p.MESSAGE_TYPES) == spec_types
    assert {m.TYPE for m in EVERY_MESSAGE} == spec_types


@pytest.mark.parametrize("msg", EVERY_MESSAGE, ids=lambda m: m.TYPE)
def test_every_message_round_trips(msg: p.Message) -> None:
    frame = p.encode_message(msg)
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4
    back = p.decode_message(frame[4:])
    assert back == msg and type(back) is type(msg)


def test_client_chat_carries_text_only() -> None:
    body = msgpack.unpackb(p.encode_message(p.Chat(text="hi"))[4:])
    assert body == {"type": "chat", "text": "hi"}


def body(**fields: Any) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (body(type="auth"), "lacks the field 'name'"),
        (body(type="auth", name=5), "must be a string"),
        (body(type="auth", name=""), "must not be empty"),
        (body(type="auth", name="x" * 33), "at most 32"),
        (body(type="auth", name="a\x00b"), "control characters"),
        (body(type="reconnect", token=0), "outside"),
        (body(type="reconnect", token=2**32), "outside"),
        (body(type="reconnect", token=True), "must be an integer"),
        (body(type="reconnect", token="1"), "must be an integer"),
        (body(type="chat", text="y" * 2001), "at most 2000"),
        (body(type="ping", nonce=1, t=float("nan")), "finite"),
        (body(type="ping", nonce=1, t="now"), "must be a number"),
        (
            body(
                type="welcome", token=1, user_id=1, udp_port=1, channel="L", channels="L", users=[]
            ),
            "must be a list",
        ),
        (
            body(
                type="welcome",
                token=1,
                user_id=1,
                udp_port=1,
                channel="L",
                channels=[],
                users=[{"user_id": 1}],
            ),
            "lacks 'name'",
        ),
        (
            body(
                type="welcome", token=1, user_id=1, udp_port=1, channel="L", channels=[], users=[5]
            ),
            "must be maps",
        ),
        (body(type="nope"), "unknown message type"),
        (body(kind="auth"), "lacks a string 'type'"),
        (msgpack.packb([1, 2]), "must be a msgpack map"),
        (b"\xc1", "not valid msgpack"),
        (b"\x81", "not valid msgpack"),
        (b"", "not valid msgpack"),
        (body(type="auth", name="a") + b"\x00", "not valid msgpack"),
    ],
)
def test_bad_messages_get_a_readable_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(p.ProtocolError, match=reason):
        p.decode_message(raw)


def test_unknown_type_has_its_own_code() -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_message(body(type="teleport"))
    assert info.value.code == "unknown_type"


def test_encode_refuses_oversized_message() -> None:
    users = [p.UserInfo(i, f"user{i:027d}", "c" * 64) for i in range(1000)]
    with pytest.raises(p.ProtocolError, match="exceeds"):
        p.encode_message(p.Welcome(1, 1, 1, "c", [], users))


# --- framing -------------------------------------------------------------------


def test_frames_split_and_coalesced() -> None:
    stream = b"".join(p.encode_message(m) for m in EVERY_MESSAGE)
    dec = p.MessageDecoder()
    got: list[p.Message | p.ProtocolError] = []
    for i in range(len(stream)):  # one byte at a time
        got += dec.feed(stream[i : i + 1])
    assert got == EVERY_MESSAGE
    assert p.MessageDecoder().feed(stream) == EVERY_MESSAGE


def test_bad_body_reported_in_place_and_stream_continues() -> None:
    frames = p.LENGTH.pack(1) + b"\xc1" + p.encode_message(p.Bye())
    out = p.MessageDecoder().feed(frames)
    assert isinstance(out[0], p.ProtocolError) and out[1] == p.Bye()


def test_huge_length_prefix_fails_without_allocating() -> None:
    dec = p.FrameDecoder()
    with pytest.raises(p.FramingError, match="exceeds"):
        dec.feed(b"\xff\xff\xff\xff" + b"x" * 10)
    assert dec.pending == 0
    with pytest.raises(p.FramingError, match="already failed"):
        dec.feed(p.encode_message(p.Bye()))


def test_max_frame_boundary() -> None:
    dec = p.FrameDecoder()
    assert dec.feed(p.LENGTH.pack(p.MAX_FRAME) + b"\0" * p.MAX_FRAME) == [b"\0" * p.MAX_FRAME]
    with pytest.raises(p.FramingError):
        p.FrameDecoder().feed(p.LENGTH.pack(p.MAX_FRAME + 1))


def test_partial_frame_is_held() -> None:
    dec = p.FrameDecoder()
    assert dec.feed(b"\x00\x00") == []
    assert dec.feed(b"\x00\x02a") == []
    assert dec.pending == 5
    assert dec.feed(b"b") == [b"ab"]
    assert dec.pending == 0


# --- fuzzing -------------------------------------------------------------------


@given(st.binary(max_size=1400))
def test_fuzz_any_bytes_parse_or_protocol_error_datagram(data: bytes) -> None:
    try:
        d = p.parse_datagram(data)
    except p.ProtocolError:
        assert not 24 <= len(data) <= 1299 and len(data) != 0
        return
    assert bytes(d) == data


@given(st.binary(max_size=2000))
def test_fuzz_any_bytes_decode_message_or_protocol_error(data: bytes) -> None:
    try:
        msg = p.decode_message(data)
    except p.ProtocolError:
        return
    assert isinstance(msg, p.Message)


# Bodies that look like messages, so the fuzzer reaches field validation, not just msgpack.
wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)


@given(
    st.sampled_from(sorted(p.MESSAGE_TYPES)),
    st.dictionaries(
        st.sampled_from(
            [
                "name",
                "token",
                "user_id",
                "udp_port",
                "channel",
                "channels",
                "users",
                "text",
                "nonce",
                "t",
                "ts",
                "code",
                "message",
            ]
        ),
        wire_values,
    ),
)
def test_fuzz_message_shaped_maps(kind: str, fields: dict[str, Any]) -> None:
    try:
        msg = p.decode_message(msgpack.packb({"type": kind, **fields}, use_bin_type=True))
    except p.ProtocolError:
        return
    assert kind == msg.TYPE
    assert p.decode_message(p.encode_message(msg)[4:]) == msg


@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=20))
def test_fuzz_frame_decoder_any_stream(stream: bytes, cuts: list[int]) -> None:
    dec = p.MessageDecoder()
    points = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
    try:
        for a, b in itertools.pairwise(points):
            for item in dec.feed(stream[a:b]):
                assert isinstance(item, p.Message | p.ProtocolError)
    except p.FramingError:
        pass


names = st.text(
    st.characters(min_codepoint=0x20, blacklist_categories=["Cs"]), min_size=1, max_size=32
).filter(lambda s: bool(s.strip()))
channels = names
u32 = st.integers(0, 2**32 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
users = st.builds(p.UserInfo, u32, names, channels)
messages = st.one_of(
    st.builds(p.Auth, names),
    st.builds(p.Reconnect, st.integers(1, 2**32 - 1)),
    st.builds(
        p.Welcome,
        st.integers(1, 2**32 - 1),
        u32,
        st.integers(0, 65535),
        channels,
        st.lists(channels, max_size=5),
        st.lists(users, max_size=5),
    ),
    st.builds(p.Join, channels),
    st.builds(p.Chat, names),
    st.builds(p.Chat, names, u32, names, channels, finite),
    st.builds(p.Ping, st.integers(0, 2**64 - 1), finite),
    st.builds(p.Pong, st.integers(0, 2**64 - 1), finite),
    st.builds(p.UserJoined, u32, names, channels),
    st.builds(p.UserLeft, u32, names, channels),
    st.just(p.Bye()),
    st.builds(p.Error, names, st.text(max_size=50).filter(lambda s: s.isprintable())),
)


@given(st.lists(messages, min_size=1, max_size=8), st.lists(st.integers(0, 10000), max_size=10))
def test_fuzz_round_trip_any_chunking(msgs: list[p.Message], cuts: list[int]) -> None:
    stream = b"".join(p.encode_message(m) for m in msgs)
    points = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
    dec = p.MessageDecoder()
    got: list[p.Message | p.ProtocolError] = []
    for a, b in itertools.pairwise(points):
        got += dec.feed(stream[a:b])
    assert got == msgs


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
    d = p.VoiceDatagram(token, seq, ts, target, payload)
    assert p.parse_datagram(bytes(d)) == d
    kind = p.REGISTER if not payload else p.VOICE
    assert p.classify(bytes(d)) == (kind, token, target)
