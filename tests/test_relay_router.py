"""relay/router.py: the per-datagram decision, on byte fixtures, without sockets."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.protocol.datagram import HEADER_SIZE, MAX_DATAGRAM, VoiceDatagram
from relay.router import (
    RECV_SIZE,
    Addr,
    Route,
    Router,
    RouteTable,
    VoiceLimit,
    add_unbound,
    remove_unbound,
)

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


def test_a_silenced_sender_reaches_no_one_but_is_answered_and_still_hears() -> None:
    r, _ = router()
    r.table = RouteTable.build(ENTRIES, silenced={0xA0A0A0A0})
    assert r.route(dgram(0xA0A0A0A0), HEADER_SIZE + 4, A) == ()
    assert r.route(dgram(0xA0A0A0A0, target=4), HEADER_SIZE + 4, A) == ()  # nor a whisper
    assert r.counters.drop_server_muted == 2 and r.counters.forwarded == 0
    assert r.route(dgram(0xA0A0A0A0), HEADER_SIZE, A) == (A,)  # its pings are answered
    assert set(r.route(dgram(0xB0B0B0B0), HEADER_SIZE + 4, B)) == {A, C}  # it hears
    r.table = RouteTable.update(r.table, {"Lobby"}, [e for e in ENTRIES if e[2] == "Lobby"])
    assert set(r.route(dgram(0xA0A0A0A0), HEADER_SIZE + 4, A)) == {B, C}  # unmuted


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


# --- the per-sender voice limit ------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def limited(limit: VoiceLimit) -> tuple[Router, FakeClock]:
    clock = FakeClock()
    r = Router(limit=limit, clock=clock)
    r.table = RouteTable.build(ENTRIES)
    return r, clock


def send(r: Router, token: int, n: int, addr: Addr = A) -> tuple[Addr, ...]:
    return r.route(dgram(token, b"x" * (n - HEADER_SIZE)), n, addr)


def test_a_burst_passes_then_the_rate() -> None:
    # Powers of two, so the clock's steps and the refills are exact in floating point.
    r, clock = limited(VoiceLimit(datagrams_per_s=64, bytes_per_s=1e9, burst_s=0.25))
    passed = sum(bool(send(r, 0xA0A0A0A0, 100)) for _ in range(30))
    assert passed == 16  # the full bucket: 0.25 s of 64/s
    assert r.counters.drop_voice_limited == 14
    assert r.counters.voice_in == 16 and r.counters.forwarded == 32  # fan-out 2
    for _ in range(100):  # then exactly the rate
        clock.t += 1 / 64
        assert send(r, 0xA0A0A0A0, 100)
    clock.t += 1 / 128
    assert not send(r, 0xA0A0A0A0, 100)  # half a token is not enough


def test_bytes_limit_refuses_large_datagrams_first() -> None:
    r, clock = limited(VoiceLimit(datagrams_per_s=1000, bytes_per_s=10_000, burst_s=0.5))
    sizes = [MAX_DATAGRAM] * 3 + [100] * 20  # 5,000 bytes of bucket: 3 large, then small
    results = [bool(send(r, 0xA0A0A0A0, n)) for n in sizes]
    assert results[:3] == [True, True, True]
    assert sum(results[3:]) == (5_000 - 3 * MAX_DATAGRAM) // 100
    clock.t += 1.0  # refills to the cap, not beyond
    assert sum(bool(send(r, 0xA0A0A0A0, MAX_DATAGRAM)) for _ in range(10)) == 3


def test_one_flooder_leaves_the_others_untouched() -> None:
    r, clock = limited(VoiceLimit())
    others = 0
    for _ in range(50 * 5):  # five seconds: 50 frames/s from B, 4,000 datagrams/s from A
        clock.t += 0.02
        for _ in range(80):
            send(r, 0xA0A0A0A0, MAX_DATAGRAM)
        others += bool(send(r, 0xB0B0B0B0, 200, B))
    assert others == 250
    flood = 250 * 80
    passed = flood - r.counters.drop_voice_limited
    # The bytes bind first for the largest datagrams: 72,000 bytes/s is 55 of them.
    assert 55 * 6 - 2 <= passed <= 72_000 * 6 // MAX_DATAGRAM + 1  # five seconds and a burst


def test_an_opus_stream_at_the_highest_bitrate_passes_the_defaults() -> None:
    r, clock = limited(VoiceLimit())
    for i in range(50 * 60):  # a minute of 20 ms frames of 1,275 bytes, pings every 2 s
        clock.t += 0.02
        assert send(r, 0xA0A0A0A0, MAX_DATAGRAM)
        if i % 100 == 0:
            assert send(r, 0xA0A0A0A0, HEADER_SIZE) == (A,)
    assert r.counters.drop_voice_limited == 0


def test_a_late_clump_within_the_burst_passes() -> None:
    r, clock = limited(VoiceLimit())
    for _ in range(100):
        clock.t += 0.02
        send(r, 0xA0A0A0A0, 500)
    clock.t += 0.5  # the sender stalled for half a second, then sends its backlog at once
    assert all(send(r, 0xA0A0A0A0, 500) for _ in range(25))
    assert r.counters.drop_voice_limited == 0


def test_limit_is_per_session_and_survives_a_table_rebuild() -> None:
    r, clock = limited(VoiceLimit(datagrams_per_s=8, bytes_per_s=1e9, burst_s=1.0))
    assert sum(bool(send(r, 0xA0A0A0A0, 100)) for _ in range(20)) == 8
    assert sum(bool(send(r, 0xB0B0B0B0, 100, B)) for _ in range(20)) == 8  # its own bucket
    # A join elsewhere rebuilds the table: the flooder's bucket stays empty.
    r.table = RouteTable.update(r.table, {"Lobby"}, [e for e in ENTRIES if e[2] == "Lobby"])
    assert not send(r, 0xA0A0A0A0, 100)
    clock.t += 0.125
    assert send(r, 0xA0A0A0A0, 100)


def test_the_limit_covers_whispers_and_pings_not_spoofed_datagrams() -> None:
    r, _ = limited(VoiceLimit(datagrams_per_s=1, bytes_per_s=1e9, burst_s=1.0))
    assert send(r, 0xA0A0A0A0, 100)
    assert r.route(dgram(0xA0A0A0A0, target=4), HEADER_SIZE + 4, A) == ()  # whisper too
    assert send(r, 0xA0A0A0A0, HEADER_SIZE) == ()  # and the ping's answer
    assert r.counters.drop_voice_limited == 2 and r.counters.drop_bad_target == 0
    # Spoofed, unbound and unknown datagrams are not charged to the bucket's owner.
    assert send(r, 0xA0A0A0A0, 100, EVIL) == ()
    assert r.counters.drop_spoofed == 1 and r.counters.drop_voice_limited == 2


def test_without_a_limit_nothing_is_refused() -> None:
    r, _ = router()
    assert all(send(r, 0xA0A0A0A0, MAX_DATAGRAM) for _ in range(10_000))
    assert r.counters.drop_voice_limited == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"datagrams_per_s": 0},
        {"bytes_per_s": -1},
        {"burst_s": float("nan")},
        {"bytes_per_s": float("inf")},
        {"bytes_per_s": 1000, "burst_s": 1.0},  # never holds a largest datagram
        {"datagrams_per_s": 0.5, "burst_s": 1.0},  # never holds one datagram
    ],
)
def test_bad_limits_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        VoiceLimit(**kwargs)


@given(
    st.lists(
        st.tuples(st.floats(0, 0.1), st.integers(HEADER_SIZE, MAX_DATAGRAM)),
        max_size=300,
    )
)
def test_fuzz_never_more_than_the_buckets_allow(steps: list[tuple[float, int]]) -> None:
    r, clock = limited(VoiceLimit(datagrams_per_s=50, bytes_per_s=20_000, burst_s=0.5))
    start = clock.t
    passed = passed_bytes = 0
    for dt, n in steps:
        clock.t += dt
        if r.route(dgram(0xA0A0A0A0, b"x" * (n - HEADER_SIZE)), n, A):  # voice or a ping's echo
            passed += 1
            passed_bytes += n
    c = r.counters
    assert passed == c.voice_in + c.register
    assert passed + c.drop_voice_limited == len(steps)
    elapsed = clock.t - start
    assert passed <= 25 + elapsed * 50 + 1e-6  # the full bucket plus the refill
    assert passed_bytes <= 10_000 + elapsed * 20_000 + 1e-6


def test_removing_unbound_sessions_equals_a_rebuild() -> None:
    a, b = ("10.0.0.1", 1), ("10.0.0.2", 2)
    entries = [(1, 11, "L", a), (2, 12, "L", None), (3, 13, "L", b), (4, 14, "M", None)]
    table = RouteTable.build(entries)
    got = remove_unbound(table, [(2, "L"), (4, "M"), (99, "L")])  # 99: never held, skipped
    want = RouteTable.update(table, {"L", "M"}, [e for e in entries if e[0] in (1, 3)])
    assert got == want and got.members == {"L": (1, 3)}
    assert table.members["L"] == (1, 2, 3)  # the old table is untouched


def heard(route: Route) -> tuple[frozenset[Addr], int, frozenset[int], int]:
    """Where a route's voice goes, destination order left out."""
    return frozenset(route.dests), len(route.dests), frozenset(route.tunnels), len(route.tunnels)


def test_a_newcomer_behind_a_tunnelled_member_sharing_an_address_hears_the_udp_one() -> None:
    # Token 1 is tunnelled and bound where token 2 (on UDP) is: two sessions of one
    # client. Token 1's dests leave A out (its own address), so a newcomer that copied
    # them sent nothing to token 2 (the SessionMachine found it).
    entries: list[tuple[int, int, str, Addr | None]] = [(1, 11, "L", A), (2, 12, "L", A)]
    table = RouteTable.build(entries, tunnelled={1})
    assert table.members["L"] == (1, 2) and table.routes[1].dests == ()
    got = add_unbound(table, [(3, 13, "L")]).routes[3]
    assert got.dests == (A,) and got.tunnels == (1,)
    everyone_tunnelled = RouteTable.build([(1, 11, "L", A), (2, 12, "L", B)], tunnelled={1, 2})
    got = add_unbound(everyone_tunnelled, [(3, 13, "L")]).routes[3]
    assert got.dests == () and set(got.tunnels) == {1, 2}


@given(
    st.lists(st.tuples(st.sampled_from([None, A, B, C]), st.booleans()), min_size=0, max_size=6),
    st.integers(1, 3),
)
def test_adding_unbound_sessions_equals_a_rebuild(
    members: list[tuple[Addr | None, bool]], newcomers: int
) -> None:
    entries = [(t, 100 + t, "L", addr) for t, (addr, _) in enumerate(members, 1)]
    tunnelled = {t for t, (_, on) in enumerate(members, 1) if on}
    table = RouteTable.build(entries, tunnelled)
    new = [(t, 100 + t, "L") for t in range(len(members) + 1, len(members) + 1 + newcomers)]
    got = add_unbound(table, new)
    want = RouteTable.build(entries + [(t, u, c, None) for t, u, c in new], tunnelled)
    assert {t: heard(r) for t, r in got.routes.items()} == {
        t: heard(r) for t, r in want.routes.items()
    }
    assert got.members == want.members and got.user_of == want.user_of
