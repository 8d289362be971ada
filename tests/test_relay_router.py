"""relay/router.py: the per-datagram decision, on byte fixtures, without sockets."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from relay.protocol.datagram import HEADER_SIZE, VoiceDatagram
from relay.router import RECV_SIZE, Addr, Router, RouteTable

A: Addr = ("127.0.0.1", 1001)
B: Addr = ("127.0.0.1", 1002)
C: Addr = ("127.0.0.1", 1003)
D: Addr = ("127.0.0.1", 1004)
EVIL: Addr = ("127.0.0.1", 6666)
# token, user id, channel, bound address
ENTRIES: list[tuple[int, int, str, Addr | None]] = [
    (0xA0A0A0A0, 1, "Lobby", A),
    (0xB0B0B0B0, 2, "Lobby", B),
    (0xC0C0C0C0, 3, "Lobby", C),
    (0xD0D0D0D0, 4, "Music", D),
    (0xE0E0E0E0, 5, "Lobby", None),  # authenticated, never registered
]


def router(echo: bool = False) -> tuple[Router, list[tuple[int, Addr, bytes]]]:
    binds: list[tuple[int, Addr, bytes]] = []
    r = Router(echo=echo, on_bind=lambda t, a, ping: binds.append((t, a, ping)))
    r.table = RouteTable.build(ENTRIES)
    return r, binds


def dgram(token: int, payload: bytes = b"opus", target: int = 0) -> bytearray:
    buf = bytearray(RECV_SIZE)
    raw = bytes(VoiceDatagram(token, 7, 8, target, payload))
    buf[: len(raw)] = raw
    return buf


def route(r: Router, buf: bytearray, addr: Addr, n: int | None = None) -> tuple[Addr, ...]:
    if n is None:
        n = len(buf.rstrip(b"\0")) if buf[HEADER_SIZE:].strip(b"\0") else HEADER_SIZE
    return r.route(buf, n, addr)


def test_voice_goes_to_other_bound_members_with_user_id() -> None:
    r, _ = router()
    buf = dgram(0xA0A0A0A0, b"hello")
    n = HEADER_SIZE + 5
    before = bytes(buf[4:n])
    assert set(r.route(buf, n, A)) == {B, C}
    assert buf[:4] == struct.pack(">I", 1)  # the token is gone, the user id in its place
    assert bytes(buf[4:n]) == before  # and nothing else changed
    assert r.counters.forwarded == 2 and r.counters.voice_in == 1


def test_other_channel_and_unbound_members_get_nothing() -> None:
    r, _ = router()
    assert r.route(dgram(0xD0D0D0D0), HEADER_SIZE + 4, D) == ()
    assert r.counters.forwarded == 0 and r.counters.voice_in == 1


def test_whisper_only_to_target_across_channels() -> None:
    r, _ = router()
    assert r.route(dgram(0xA0A0A0A0, target=4), HEADER_SIZE + 4, A) == (D,)
    assert r.route(dgram(0xA0A0A0A0, target=5), HEADER_SIZE + 4, A) == ()  # not bound
    assert r.route(dgram(0xA0A0A0A0, target=99), HEADER_SIZE + 4, A) == ()
    assert r.route(dgram(0xA0A0A0A0, target=1), HEADER_SIZE + 4, A) == ()  # oneself
    assert r.counters.drop_bad_target == 3


def test_keepalive_short_long_unknown() -> None:
    r, binds = router()
    buf = dgram(0xA0A0A0A0)
    assert r.route(buf, 0, A) == ()
    for n in range(1, HEADER_SIZE):
        assert r.route(buf, n, A) == ()
    assert r.route(buf, RECV_SIZE, A) == ()
    assert r.route(dgram(12345), HEADER_SIZE + 4, A) == ()
    assert r.route(dgram(12345), HEADER_SIZE, A) == ()
    c = r.counters
    assert (c.keepalive, c.drop_short, c.drop_long, c.drop_unknown_token) == (1, 23, 1, 2)
    assert binds == [] and c.forwarded == 0


def test_register_from_bound_address_is_answered_unchanged() -> None:
    r, binds = router()
    buf = dgram(0xA0A0A0A0, b"")
    assert r.route(buf, HEADER_SIZE, A) == (A,)
    assert buf[:4] == struct.pack(">I", 0xA0A0A0A0)  # the answer is the ping itself
    assert binds == [] and r.counters.register == 1


def test_register_from_new_address_asks_for_binding() -> None:
    r, binds = router()
    buf = dgram(0xE0E0E0E0, b"")
    assert r.route(buf, HEADER_SIZE, EVIL) == ()
    assert binds == [(0xE0E0E0E0, EVIL, bytes(buf[:HEADER_SIZE]))]


def test_voice_from_wrong_or_unbound_address_dropped() -> None:
    r, _ = router()
    assert r.route(dgram(0xA0A0A0A0), HEADER_SIZE + 4, EVIL) == ()
    assert r.route(dgram(0xE0E0E0E0), HEADER_SIZE + 4, EVIL) == ()
    assert (r.counters.drop_spoofed, r.counters.drop_unbound) == (1, 1)


def test_echo_mode_sends_back_unchanged() -> None:
    r, _ = router(echo=True)
    buf = dgram(0xA0A0A0A0, b"me")
    raw = bytes(buf)
    assert r.route(buf, HEADER_SIZE + 2, A) == (A,)
    assert bytes(buf) == raw and r.counters.echoed == 1
    assert r.route(dgram(0xA0A0A0A0), HEADER_SIZE + 2, EVIL) == ()  # not an open reflector


def test_table_never_lists_sender_or_duplicates() -> None:
    entries: list[tuple[int, int, str, Addr | None]] = [
        (1, 10, "x", A),
        (2, 11, "x", A),  # a stale session from the same client
        (3, 12, "x", B),
    ]
    t = RouteTable.build(entries)
    assert t.routes[1].dests == (B,) and t.routes[3].dests == (A,)


def test_empty_router_drops_everything() -> None:
    r = Router()
    assert r.route(dgram(1), HEADER_SIZE + 4, A) == ()
    assert r.counters.drop_unknown_token == 1
    assert "drop_unknown_token=1" in r.counters.line()


@given(st.binary(max_size=RECV_SIZE), st.sampled_from([A, B, EVIL]))
def test_fuzz_any_bytes_route_or_drop_and_are_counted(data: bytes, addr: Addr) -> None:
    r, _ = router()
    # Half the time, put a known token in front so the deeper branches run.
    buf = bytearray(RECV_SIZE)
    buf[: len(data)] = data
    if len(data) >= 4 and data[0] & 1:
        buf[:4] = struct.pack(">I", ENTRIES[data[1] % len(ENTRIES)][0])
    dests = r.route(buf, len(data), addr)
    assert all(d in (A, B, C, D, EVIL) for d in dests)
    c = r.counters.as_dict()
    outcomes = sum(v for k, v in c.items() if k not in ("forwarded", "echoed", "send_errors"))
    assert outcomes == 1  # every datagram lands in exactly one outcome
