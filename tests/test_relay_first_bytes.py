"""relay/first_bytes.py: telling a TLS ClientHello from a protocol-1 frame, and the answer."""

from __future__ import annotations

import contextlib
import ssl

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from relay.first_bytes import (
    PLAIN_LIMIT,
    TLS_HANDSHAKE,
    UPGRADE,
    Hello,
    PlainHello,
    Verdict,
    classify,
)
from relay.protocol.messages import (
    LENGTH,
    Auth,
    Error,
    MessageDecoder,
    Reconnect,
    encode_message,
)
from relay.tls import client_context


def client_hello() -> bytes:
    """The first flight of a real TLS client (the relay's clients' context)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context().wrap_bio(incoming, outgoing)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_a_real_client_hello_goes_to_tls_and_a_protocol_1_frame_does_not() -> None:
    hello = client_hello()
    assert hello[0] == TLS_HANDSHAKE and hello[1] == 3
    assert classify(hello[0]) is Hello.TLS
    assert classify(encode_message(Auth(name="old"))[0]) is Hello.PLAIN


@given(st.integers(0, 255))
def test_only_a_zero_byte_is_taken_for_protocol_1(first: int) -> None:
    # Everything else goes to TLS, as it did before the sniffing: nothing new is refused.
    assert classify(first) is (Hello.PLAIN if first == 0 else Hello.TLS)


def feed_all(data: bytes, cuts: list[int]) -> PlainHello:
    hello = PlainHello()
    start = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        hello.feed(data[start:cut])
        start = cut
    hello.feed(data[start:])
    return hello


def test_an_old_auth_or_reconnect_is_told_to_upgrade_in_protocol_1_framing() -> None:
    for msg in (Auth(name="old"), Auth(name="old", password="pw"), Reconnect(token=7)):
        frame = encode_message(msg)
        for cut in range(len(frame) + 1):  # every split of the frame in two reads
            hello = feed_all(frame, [cut])
            assert hello.verdict is Verdict.OLD_CLIENT
            (reply,) = MessageDecoder().feed(hello.reply)
            assert isinstance(reply, Error) and reply.code == "bad_version"
            assert "protocol 2" in reply.message and "TLS" in reply.message
            assert "protocol 1" in reply.message
    assert UPGRADE.code == "bad_version"


# The first bytes a protocol-1 client sends, as the released one does (the headless
# client of commit 43dec21, the last before protocol 2, run with --name old and
# captured on a plain socket): an auth frame with no version field.
OLD_CLIENT_AUTH = bytes.fromhex("0000001482a474797065a461757468a46e616d65a36f6c64")


def test_the_bytes_a_released_protocol_1_client_sends_are_told_to_upgrade() -> None:
    assert classify(OLD_CLIENT_AUTH[0]) is Hello.PLAIN
    for cut in range(len(OLD_CLIENT_AUTH) + 1):
        hello = feed_all(OLD_CLIENT_AUTH, [cut])
        assert hello.verdict is Verdict.OLD_CLIENT
        # What that client's decoder reads: one u32-framed msgpack map, type error,
        # code and message strings (its Error), nothing else.
        (length,) = LENGTH.unpack_from(hello.reply)
        assert len(hello.reply) == LENGTH.size + length
        body = msgpack.unpackb(hello.reply[LENGTH.size :], raw=False)
        assert body == {"type": "error", "code": "bad_version", "message": UPGRADE.message}


def test_every_truncation_of_an_old_auth_asks_for_more() -> None:
    frame = encode_message(Auth(name="old"))
    for n in range(len(frame)):
        hello = PlainHello()
        assert hello.feed(frame[:n]) is Verdict.MORE and hello.reply == b""


def test_what_is_not_a_protocol_1_message_gets_no_answer() -> None:
    cases = [
        LENGTH.pack(0),  # an empty frame
        LENGTH.pack(PLAIN_LIMIT + 1) + b"x" * 10,  # longer than an old client's first frame
        LENGTH.pack(3) + b"abc",  # not msgpack
        LENGTH.pack(1) + b"\x01",  # msgpack, not a map
        encode_message(Auth(name="old"))[:4] + b"\xff" * 20,
    ]
    for data in cases:
        hello = PlainHello()
        verdict = hello.feed(data)
        assert verdict is Verdict.NOT_PROTOCOL, data
        assert hello.reply == b""
        assert hello.feed(encode_message(Auth(name="late"))) is Verdict.NOT_PROTOCOL  # final


@given(st.binary(max_size=PLAIN_LIMIT + 64), st.lists(st.integers(0, 10_000), max_size=6))
def test_any_bytes_in_any_chunks_give_a_verdict_never_an_exception(
    data: bytes, cuts: list[int]
) -> None:
    hello = feed_all(data, cuts)
    whole = PlainHello()
    whole.feed(data)
    assert hello.verdict is whole.verdict  # how the bytes were split changes nothing
    if hello.verdict is Verdict.OLD_CLIENT:
        assert hello.reply == encode_message(UPGRADE)
    else:
        assert hello.reply == b""
    if len(data) >= LENGTH.size + PLAIN_LIMIT:
        assert hello.verdict is not Verdict.MORE  # bounded: it never waits past the limit
