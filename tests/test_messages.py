"""relay/protocol/messages.py: every control message, its exact bytes, framing, fuzzing."""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass, replace
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.protocol import messages as wire
from relay.protocol.errors import FramingError, ProtocolError
from relay.protocol.messages import (
    LENGTH,
    MAX_BURST,
    MAX_FRAME,
    MAX_LIST,
    MAX_RECEPTION,
    MAX_TUNNELLED,
    MESSAGE_TYPES,
    Auth,
    Bye,
    ChannelInfo,
    ChannelList,
    Chat,
    Error,
    FrameDecoder,
    Join,
    MediaKey,
    Message,
    MessageDecoder,
    Ping,
    Pong,
    ReceiverReport,
    Reception,
    Reconnect,
    SelfState,
    SpeakerReception,
    Tunnel,
    UserInfo,
    UserJoined,
    UserLeft,
    UserList,
    UserState,
    Voice,
    Welcome,
    decode_message,
    encode_message,
    encode_user_list,
    encode_welcome,
    fits_in_frame,
    pack_user,
)

# --- control messages ------------------------------------------------------------

EVERY_MESSAGE: list[Message] = [
    Auth(name="alice"),
    Reconnect(token=0xDEADBEEF),
    Welcome(
        token=9,
        user_id=3,
        udp_port=8080,
        channel="Lobby",
        channels=["Lobby", "Games"],
        users=[UserInfo(3, "alice", "Lobby"), UserInfo(4, "bob", "Games")],
    ),
    Join(channel="Games"),
    Chat(text="hello"),
    Chat(text="hello", user_id=3, name="alice", channel="Lobby", ts=1700000000.5),
    Ping(nonce=1, t=2.5),
    Pong(nonce=1, t=2.5),
    UserJoined(user_id=4, name="bob", channel="Lobby"),
    UserLeft(user_id=4, name="bob", channel="Lobby"),
    Bye(),
    Error(code="unknown_token", message="session expired"),
    UserList(users=[UserInfo(5, "carol", "Lobby")], first=True, last=False),
    Welcome(9, 3, 8080, "Lobby", ["Lobby"], [UserInfo(3, "alice", "Lobby")], more=True),
    Reception(reports=[SpeakerReception(4, 5.5, 1.0), SpeakerReception(7, 0.0, 0.0)]),
    ReceiverReport(loss_percent=7.5, late_percent=2.0, listeners=3),
    # Protocol 2: versions, the password, the keys.
    Auth(name="alice", version=2, password="s3cret"),
    Reconnect(token=5, version=2),
    Welcome(
        9,
        3,
        8080,
        "Lobby",
        ["Lobby"],
        [],
        version=2,
        udp_key=b"k" * 32,
        media_key_id=1,
        media_key=b"m" * 16,
    ),
    MediaKey(channel="Games", key_id=2, key=b"n" * 16),
    ChannelList([ChannelInfo("Lobby"), ChannelInfo("Ops", "operators only", 4)]),
    SelfState(muted=True, deafened=False),
    UserState(user_id=4, muted=True, deafened=True),
    UserState(user_id=4, server_muted=True),
    UserList(users=[UserInfo(5, "carol", "Lobby", muted=True)], first=True, last=True),
    UserList(users=[UserInfo(6, "dave", "Lobby", server_muted=True)], first=True, last=True),
    # The TCP tunnel, and the relay's public UDP host.
    Voice(data=b"\x02\x02\x01" + bytes(64)),
    Voice(data=bytes(MAX_TUNNELLED)),
    Tunnel(on=True),
    Tunnel(on=False),
    Welcome(9, 3, 8080, "Lobby", ["Lobby"], [], udp_host="voice.example.org"),
    # A cluster relay's peers (SPEC.md, "Several relays").
    Welcome(9, 3, 8080, "Lobby", [], [], relays=[{"addr": "b:8080", "fingerprint": "AB:CD"}]),
]


relays_values = st.recursive(  # no NaN: the test compares what comes back
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@given(relays_values)
def test_a_welcome_is_never_refused_for_its_relays(relays: Any) -> None:
    """Its entries are the client's to judge one by one (pipeline/core/relays.py)."""
    body = Welcome(1, 1, 1, "c", [], [], relays=relays).to_map()
    msg = decode_message(msgpack.packb(body, use_bin_type=True))
    assert isinstance(msg, Welcome) and msg.relays == relays


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
        "user_list",
        "reception",
        "receiver_report",
        "media_key",
        "channel_list",
        "self_state",
        "user_state",
        "voice",
        "tunnel",
    }
    assert set(MESSAGE_TYPES) == spec_types
    assert {m.TYPE for m in EVERY_MESSAGE} == spec_types


@pytest.mark.parametrize("msg", EVERY_MESSAGE, ids=lambda m: m.TYPE)
def test_every_message_round_trips(msg: Message) -> None:
    frame = encode_message(msg)
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4
    back = decode_message(frame[4:])
    assert back == msg and type(back) is type(msg)


def test_client_chat_carries_text_only() -> None:
    body = msgpack.unpackb(encode_message(Chat(text="hi"))[4:])
    assert body == {"type": "chat", "text": "hi"}


# Frames as the single-module protocol (before the split) encoded them: the wire is unchanged.
EXACT_FRAMES: list[tuple[Message, str]] = [
    (Auth(name="alice"), "0000001682a474797065a461757468a46e616d65a5616c696365"),
    (Chat(text="hello"), "0000001682a474797065a463686174a474657874a568656c6c6f"),
    (
        Chat(text="hello", user_id=3, name="alice", channel="Lobby", ts=1700000000.5),
        "0000004486a474797065a463686174a474657874a568656c6c6fa7757365725f696403a46e616d65"
        "a5616c696365a76368616e6e656ca54c6f626279a27473cb41d954fc40200000",
    ),
    (
        EVERY_MESSAGE[2],  # the welcome
        "0000009987a474797065a777656c636f6d65a5746f6b656e09a7757365725f696403a87564705f706f"
        "7274cd1f90a76368616e6e656ca54c6f626279a86368616e6e656c7392a54c6f626279a547616d6573"
        "a575736572739283a7757365725f696403a46e616d65a5616c696365a76368616e6e656ca54c6f6262"
        "7983a7757365725f696404a46e616d65a3626f62a76368616e6e656ca547616d6573",
    ),
    (Ping(nonce=1, t=2.5), "0000001d83a474797065a470696e67a56e6f6e636501a174cb4004000000000000"),
    (Bye(), "0000000a81a474797065a3627965"),
    (
        UserList([UserInfo(4, "bob", "Games")], first=True, last=True),
        "0000004584a474797065a9757365725f6c697374a575736572739183a7757365725f696404a46e616d65"
        "a3626f62a76368616e6e656ca547616d6573a56669727374c3a46c617374c3",
    ),
]


@pytest.mark.parametrize(("msg", "frame"), EXACT_FRAMES, ids=lambda x: getattr(x, "TYPE", ""))
def test_exact_bytes_on_the_wire(msg: Message, frame: str) -> None:
    assert encode_message(msg).hex() == frame
    assert decode_message(bytes.fromhex(frame)[4:]) == msg


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
        (body(type="reconnect", token=-1), "outside"),
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
            r"welcome.users\[0\] lacks the field 'name'",
        ),
        (
            body(
                type="welcome", token=1, user_id=1, udp_port=1, channel="L", channels=[], users=[5]
            ),
            r"welcome.users\[0\] must be a map, got int",
        ),
        (body(type="voice", data=b""), "outside 1..1342"),
        (body(type="voice", data=bytes(1343)), "outside 1..1342"),
        (body(type="voice", data="text"), "must be bytes"),
        (body(type="tunnel", on=1), "must be a bool"),
        (body(type="tunnel"), "lacks the field 'on'"),
        (
            body(
                type="welcome",
                token=1,
                user_id=1,
                udp_port=1,
                channel="L",
                channels=[],
                users=[],
                udp_host="h" * 254,
            ),
            "at most 253",
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
    with pytest.raises(ProtocolError, match=reason):
        decode_message(raw)


def test_field_errors_are_bad_message_and_name_the_path() -> None:
    users = [
        {"user_id": 1, "name": "a", "channel": "L"},
        {"user_id": 2, "name": "", "channel": "L"},
    ]
    raw = body(
        type="welcome", token=1, user_id=1, udp_port=1, channel="L", channels=[], users=users
    )
    with pytest.raises(ProtocolError, match=r"^welcome.users\[1\].name must not be empty$") as info:
        decode_message(raw)
    assert info.value.code == "bad_message"


@pytest.mark.parametrize("missing", ["channels", "users"])
def test_welcome_lists_are_required_on_the_wire(missing: str) -> None:
    fields: dict[str, Any] = dict(
        type="welcome", token=1, user_id=1, udp_port=1, channel="L", channels=[], users=[]
    )
    del fields[missing]
    with pytest.raises(ProtocolError, match=f"welcome lacks the field '{missing}'"):
        decode_message(body(**fields))


def test_welcome_lists_are_bounded() -> None:
    channels = [f"c{i}" for i in range(MAX_LIST + 1)]
    raw = body(
        type="welcome", token=1, user_id=1, udp_port=1, channel="L", channels=channels, users=[]
    )
    with pytest.raises(ProtocolError, match=f"welcome.channels has {MAX_LIST + 1} entries"):
        decode_message(raw)


def test_relay_chat_fields_are_checked_when_present() -> None:
    assert decode_message(body(type="chat", text="hi", ts=2)) == Chat(text="hi", ts=2.0)
    with pytest.raises(ProtocolError, match=r"chat\.user_id must be an integer"):
        decode_message(body(type="chat", text="hi", user_id=False))
    with pytest.raises(ProtocolError, match=r"chat\.ts must be finite"):
        decode_message(body(type="chat", text="hi", ts=float("inf")))


def test_reception_is_bounded_in_entries_and_values() -> None:
    entry = {"user_id": 4, "loss_percent": 5, "late_percent": 0.5}
    assert decode_message(body(type="reception", reports=[entry])) == Reception(
        [SpeakerReception(4, 5.0, 0.5)]
    )
    with pytest.raises(ProtocolError, match=f"reception.reports has {MAX_RECEPTION + 1} entries"):
        decode_message(body(type="reception", reports=[entry] * (MAX_RECEPTION + 1)))
    bad_values = [
        (100.5, "is 100.5, outside 0..100"),
        (-1, "is -1, outside"),
        (float("nan"), "must be finite"),
        (True, "must be a number"),
    ]
    for value, reason in bad_values:
        bad = {**entry, "loss_percent": value}
        with pytest.raises(ProtocolError, match=rf"reception.reports\[0\].loss_percent {reason}"):
            decode_message(body(type="reception", reports=[bad]))
    with pytest.raises(ProtocolError, match=r"receiver_report.listeners is 65536, outside"):
        decode_message(
            body(type="receiver_report", loss_percent=1, late_percent=0, listeners=65536)
        )
    with pytest.raises(ProtocolError, match="receiver_report lacks the field 'listeners'"):
        decode_message(body(type="receiver_report", loss_percent=1, late_percent=0))


def test_the_loss_burst_is_optional_and_bounded() -> None:
    entry = {"user_id": 4, "loss_percent": 5, "late_percent": 0.5}
    # An older client sends no burst: unknown, 0.
    old = decode_message(body(type="reception", reports=[entry]))
    assert old == Reception([SpeakerReception(4, 5.0, 0.5, 0.0)])
    got = decode_message(body(type="reception", reports=[{**entry, "burst_mean": 2.5}]))
    assert got == Reception([SpeakerReception(4, 5.0, 0.5, 2.5)])
    report = body(type="receiver_report", loss_percent=1, late_percent=0, listeners=1)
    assert decode_message(report) == ReceiverReport(1.0, 0.0, 1, 0.0)
    for bad in (-0.5, MAX_BURST + 1, float("inf")):
        with pytest.raises(ProtocolError, match=r"reception.reports\[0\].burst_mean"):
            decode_message(body(type="reception", reports=[{**entry, "burst_mean": bad}]))
        with pytest.raises(ProtocolError, match=r"receiver_report.burst_mean"):
            decode_message(
                body(
                    type="receiver_report",
                    loss_percent=1,
                    late_percent=0,
                    listeners=1,
                    burst_mean=bad,
                )
            )


def test_a_full_reception_fits_a_small_frame() -> None:
    entry = SpeakerReception(2**32 - 1, 33.333333333, 99.999999, 2.718281828)
    worst = Reception([entry] * MAX_RECEPTION)
    assert len(encode_message(worst)) < 6144  # a tenth of MAX_FRAME: one small write


def test_oversized_frame_body_is_too_large() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_message(b"\x00" * (MAX_FRAME + 1))
    assert info.value.code == "too_large"


def test_fits_in_frame_agrees_with_encode() -> None:
    def welcome(n: int) -> Welcome:
        users = [UserInfo(i, f"user{i:027d}", "c" * 64) for i in range(n)]
        return Welcome(1, 1, 1, "c", [], users)

    assert fits_in_frame(welcome(10)) and encode_message(welcome(10))
    assert not fits_in_frame(welcome(1000))


def test_a_welcome_without_more_is_the_old_frame() -> None:
    """Paging is wire-compatible: a welcome that fits one frame has no ``more`` key."""
    w = EVERY_MESSAGE[2]
    assert isinstance(w, Welcome)
    assert "more" not in msgpack.unpackb(encode_message(w)[4:])
    assert decode_message(encode_message(w)[4:]) == w
    assert msgpack.unpackb(encode_message(replace(w, more=True))[4:])["more"] is True


def split(data: bytes) -> list[Message]:
    out = MessageDecoder().feed(data)
    assert all(isinstance(m, Message) for m in out)
    return [m for m in out if isinstance(m, Message)]


def long_users(n: int) -> list[UserInfo]:
    return [UserInfo(i, f"user{i:027d}", "c" * 64) for i in range(n)]


def test_a_user_is_packed_without_a_false_mute_or_deafen() -> None:
    """Mute and deafen cost a user list nothing until someone uses them."""
    plain = msgpack.unpackb(pack_user(UserInfo(3, "alice", "Lobby")))
    assert plain == {"user_id": 3, "name": "alice", "channel": "Lobby"}
    muted = msgpack.unpackb(pack_user(UserInfo(3, "alice", "Lobby", muted=True)))
    assert muted == {"user_id": 3, "name": "alice", "channel": "Lobby", "muted": True}
    frame = encode_user_list([pack_user(UserInfo(3, "alice", "Lobby", True, True))])
    (page,) = MessageDecoder().feed(frame)
    assert isinstance(page, UserList) and page.users == [UserInfo(3, "alice", "Lobby", True, True)]


def test_the_servers_mute_is_absent_on_the_wire_until_it_is_used() -> None:
    """A user_state or a user list without a server mute is byte for byte the old one."""
    assert encode_message(UserState(4, True, False)) == encode_message(UserState(4, True))
    old = msgpack.unpackb(encode_message(UserState(4, True, False))[4:])
    assert old == {"type": "user_state", "user_id": 4, "muted": True, "deafened": False}
    new = msgpack.unpackb(encode_message(UserState(4, server_muted=True))[4:])
    assert new["server_muted"] is True
    user = msgpack.unpackb(pack_user(UserInfo(3, "bob", "Lobby", server_muted=True)))
    assert user == {"user_id": 3, "name": "bob", "channel": "Lobby", "server_muted": True}
    with pytest.raises(ProtocolError, match="server_muted"):
        decode_message(msgpack.packb({"type": "user_state", "user_id": 4, "server_muted": 1}))


def test_self_state_needs_a_bool_mute() -> None:
    with pytest.raises(ProtocolError, match=r"self_state\.muted must be a bool"):
        decode_message(msgpack.packb({"type": "self_state", "muted": 1}))
    with pytest.raises(ProtocolError, match="lacks the field 'muted'"):
        decode_message(msgpack.packb({"type": "self_state"}))


def test_a_long_welcome_goes_on_in_user_list_pages() -> None:
    users = long_users(3000)
    head = Welcome(7, 1, 8080, "c" * 64, ["c" * 64], [])
    data = encode_welcome(head, [pack_user(u) for u in users])
    frames = split(data)
    w, *pages = frames
    assert isinstance(w, Welcome) and w.more and (w.token, w.user_id) == (7, 1)
    assert pages and all(isinstance(p, UserList) and not p.first for p in pages)
    assert [p.last for p in pages if isinstance(p, UserList)] == [False] * (len(pages) - 1) + [True]
    got = list(w.users) + [u for p in pages if isinstance(p, UserList) for u in p.users]
    assert got == users
    # Every frame within the limit, and no page much emptier than it needed to be.
    pos = 0
    while pos < len(data):
        (n,) = LENGTH.unpack_from(data, pos)
        assert n <= MAX_FRAME
        pos += 4 + n
    assert len(frames) <= 2 + len(data) // MAX_FRAME


def test_a_short_welcome_is_one_frame_and_equals_the_plain_encoding() -> None:
    users = [UserInfo(3, "alice", "Lobby"), UserInfo(4, "bob", "Games")]
    head = Welcome(9, 3, 8080, "Lobby", ["Lobby", "Games"], [])
    data = encode_welcome(head, [pack_user(u) for u in users])
    assert split(data) == [Welcome(9, 3, 8080, "Lobby", ["Lobby", "Games"], users)]


def test_a_snapshot_marks_its_first_and_last_page() -> None:
    assert split(encode_user_list([])) == [UserList([], first=True, last=True)]
    pages = split(encode_user_list([pack_user(u) for u in long_users(MAX_LIST + 10)]))
    assert len(pages) >= 2
    assert [(p.first, p.last) for p in pages if isinstance(p, UserList)] == [
        (i == 0, i == len(pages) - 1) for i in range(len(pages))
    ]


@given(st.lists(st.integers(0, 2**32 - 1), max_size=300), st.integers(1, 32))
def test_fuzz_pages_hold_every_user_in_order(ids: list[int], name_len: int) -> None:
    users = [UserInfo(i, "n" * name_len, "c" * 64) for i in ids]
    data = encode_welcome(Welcome(1, 1, 1, "c", [], []), [pack_user(u) for u in users])
    got: list[UserInfo] = []
    for m in split(data):
        assert isinstance(m, Welcome | UserList)
        got += m.users
    assert got == users


def _reference_pages(head_size: int, users: list[bytes]) -> list[list[bytes]]:
    """The page cut one user at a time: what messages._pages must equal."""
    budget = MAX_FRAME - head_size - wire._PAGE_SLACK
    pages: list[list[bytes]] = [[]]
    size = 0
    for user in users:
        if pages[-1] and (size + len(user) > budget or len(pages[-1]) >= MAX_LIST):
            pages.append([])
            size = 0
        pages[-1].append(user)
        size += len(user)
    return pages


@given(
    st.lists(st.integers(1, 40_000), max_size=60),
    st.integers(0, 64),
    st.integers(0, MAX_LIST + 50),
)
def test_fuzz_pages_are_cut_as_one_user_at_a_time_would(
    sizes: list[int], head_size: int, small: int
) -> None:
    users = [b"x" * n for n in sizes] + [b"u" * 9] * small
    got = [list(p) for p in wire._pages(head_size, users)]
    assert got == _reference_pages(head_size, users)


def test_the_tunnel_carries_any_datagram_up_to_the_largest_sealed_one() -> None:
    from relay.protocol.sealed_datagram import MAX_DATAGRAM

    assert MAX_TUNNELLED == MAX_DATAGRAM
    frame = encode_message(Voice(bytes(MAX_DATAGRAM)))
    assert len(frame) < 1400  # a voice frame's own overhead is a few bytes
    assert repr(Voice(b"abc")) == "Voice(3 bytes)"


def test_unknown_type_has_its_own_code() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_message(body(type="teleport"))
    assert info.value.code == "unknown_type"


def test_encode_refuses_oversized_message() -> None:
    users = [UserInfo(i, f"user{i:027d}", "c" * 64) for i in range(1000)]
    with pytest.raises(ProtocolError, match="exceeds"):
        encode_message(Welcome(1, 1, 1, "c", [], users))


# --- framing -------------------------------------------------------------------


def test_frames_split_and_coalesced() -> None:
    stream = b"".join(encode_message(m) for m in EVERY_MESSAGE)
    dec = MessageDecoder()
    got: list[Message | ProtocolError] = []
    for i in range(len(stream)):  # one byte at a time
        got += dec.feed(stream[i : i + 1])
    assert got == EVERY_MESSAGE
    assert MessageDecoder().feed(stream) == EVERY_MESSAGE


def test_bad_body_reported_in_place_and_stream_continues() -> None:
    frames = LENGTH.pack(1) + b"\xc1" + encode_message(Bye())
    out = MessageDecoder().feed(frames)
    assert isinstance(out[0], ProtocolError) and out[1] == Bye()


def test_huge_length_prefix_fails_without_allocating() -> None:
    dec = FrameDecoder()
    with pytest.raises(FramingError, match="exceeds"):
        dec.feed(b"\xff\xff\xff\xff" + b"x" * 10)
    assert dec.pending == 0
    with pytest.raises(FramingError, match="already failed"):
        dec.feed(encode_message(Bye()))


def test_max_frame_boundary() -> None:
    dec = FrameDecoder()
    assert dec.feed(LENGTH.pack(MAX_FRAME) + b"\0" * MAX_FRAME) == [b"\0" * MAX_FRAME]
    with pytest.raises(FramingError):
        FrameDecoder().feed(LENGTH.pack(MAX_FRAME + 1))


def test_partial_frame_is_held() -> None:
    dec = FrameDecoder()
    assert dec.feed(b"\x00\x00") == []
    assert dec.feed(b"\x00\x02a") == []
    assert dec.pending == 5
    assert dec.feed(b"b") == [b"ab"]
    assert dec.pending == 0


# --- fuzzing -------------------------------------------------------------------


@given(st.binary(max_size=2000))
def test_fuzz_any_bytes_decode_message_or_protocol_error(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except ProtocolError:
        return
    assert isinstance(msg, Message)


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
    st.sampled_from(sorted(MESSAGE_TYPES)),
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
                "more",
                "first",
                "last",
                "reports",
                "loss_percent",
                "late_percent",
                "listeners",
                "muted",
                "deafened",
                "server_muted",
                "data",
                "on",
                "udp_host",
            ]
        ),
        wire_values,
    ),
)
def test_fuzz_message_shaped_maps(kind: str, fields: dict[str, Any]) -> None:
    try:
        msg = decode_message(msgpack.packb({"type": kind, **fields}, use_bin_type=True))
    except ProtocolError:
        return
    assert kind == msg.TYPE
    assert decode_message(encode_message(msg)[4:]) == msg


@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=20))
def test_fuzz_frame_decoder_any_stream(stream: bytes, cuts: list[int]) -> None:
    dec = MessageDecoder()
    points = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
    try:
        for a, b in itertools.pairwise(points):
            for item in dec.feed(stream[a:b]):
                assert isinstance(item, Message | ProtocolError)
    except FramingError:
        pass


names = st.text(
    st.characters(min_codepoint=0x20, blacklist_categories=["Cs"]), min_size=1, max_size=32
).filter(lambda s: bool(s.strip()))
channels = names
u32 = st.integers(0, 2**32 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
users = st.builds(UserInfo, u32, names, channels, st.booleans(), st.booleans())
percent = st.floats(0.0, 100.0)
receptions = st.builds(SpeakerReception, u32, percent, percent, st.floats(0.0, MAX_BURST))
messages = st.one_of(
    st.builds(Auth, names),
    st.builds(Reconnect, st.integers(1, 2**32 - 1)),
    st.builds(
        Welcome,
        st.integers(1, 2**32 - 1),
        u32,
        st.integers(0, 65535),
        channels,
        st.lists(channels, max_size=5),
        st.lists(users, max_size=5),
    ),
    st.builds(Join, channels),
    st.builds(Chat, names),
    st.builds(Chat, names, u32, names, channels, finite),
    st.builds(Ping, st.integers(0, 2**64 - 1), finite),
    st.builds(Pong, st.integers(0, 2**64 - 1), finite),
    st.builds(UserJoined, u32, names, channels),
    st.builds(UserLeft, u32, names, channels),
    st.just(Bye()),
    st.builds(Error, names, st.text(max_size=50).filter(lambda s: s.isprintable())),
    st.builds(UserList, st.lists(users, max_size=5), st.booleans(), st.booleans()),
    st.builds(
        Welcome,
        st.integers(1, 2**32 - 1),
        u32,
        st.integers(0, 65535),
        channels,
        st.lists(channels, max_size=5),
        st.lists(users, max_size=5),
        st.booleans(),
    ),
    st.builds(Reception, st.lists(receptions, max_size=MAX_RECEPTION)),
    st.builds(ReceiverReport, percent, percent, st.integers(0, 65535), st.floats(0.0, MAX_BURST)),
    st.builds(SelfState, st.booleans(), st.booleans()),
    st.builds(UserState, u32, st.booleans(), st.booleans()),
    st.builds(Voice, st.binary(min_size=1, max_size=MAX_TUNNELLED)),
    st.builds(Tunnel, st.booleans()),
)


@given(st.lists(messages, min_size=1, max_size=8), st.lists(st.integers(0, 10000), max_size=10))
def test_fuzz_round_trip_any_chunking(msgs: list[Message], cuts: list[int]) -> None:
    stream = b"".join(encode_message(m) for m in msgs)
    points = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
    dec = MessageDecoder()
    got: list[Message | ProtocolError] = []
    for a, b in itertools.pairwise(points):
        got += dec.feed(stream[a:b])
    assert got == msgs


@dataclass(frozen=True, slots=True)
class _Peer:  # a relay's own record of a peer, as a cluster might hold one
    addr: str
    fingerprint: str


def test_a_welcome_sends_relay_records_as_maps() -> None:
    peer = _Peer("b.example:8080", ":".join(["AB"] * 32))
    data = encode_message(Welcome(1, 1, 1, "c", [], [], relays=[peer, {"addr": "x"}]))
    msg = decode_message(data[4:])
    assert isinstance(msg, Welcome)
    assert msg.relays == [
        {"addr": "b.example:8080", "fingerprint": peer.fingerprint},
        {"addr": "x"},
    ]
