"""pipeline/core/voice_link.py: the network stage's sans-I/O decisions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.seqnum import MASK
from pipeline.core.voice_link import (
    KEEPALIVE_NS,
    MAX_RTT_NS,
    REGISTER_PERIOD_NS,
    REGISTER_RETRY_NS,
    Chaos,
    VoiceLink,
    media_timestamp,
)
from relay.protocol.datagram import HEADER, VOICE, VoiceDatagram, classify


def test_nothing_is_sent_without_a_session() -> None:
    link = VoiceLink()
    assert link.timers(0) == []
    assert not link.should_send()
    assert link.counters["unsent_no_session"] == 1


def test_register_until_answered_then_periodic() -> None:
    link = VoiceLink()
    link.set_session(77, now=1000)
    first = link.timers(1000)
    assert b"" in first  # keepalive
    (ping,) = [d for d in first if d]
    d = VoiceDatagram.parse(ping)
    assert d.is_register and d.token == 77 and d.timestamp == 1000
    assert link.timers(1000 + REGISTER_RETRY_NS - 1) == []
    assert len(link.timers(1000 + REGISTER_RETRY_NS)) == 1  # retried: no answer yet
    echo_at = 1000 + REGISTER_RETRY_NS + 250_000
    assert link.received(memoryview(ping), echo_at) is None
    assert link.registered and link.rtt_ns == echo_at - 1000
    assert [x for x in link.timers(echo_at + REGISTER_PERIOD_NS - 1) if x] == []
    assert [x for x in link.timers(echo_at + REGISTER_PERIOD_NS) if x]  # periodic from now on


def test_keepalive_every_five_seconds() -> None:
    link = VoiceLink()
    link.set_session(1, 0)
    assert b"" in link.timers(0)
    assert b"" not in link.timers(KEEPALIVE_NS - 1)
    assert b"" in link.timers(KEEPALIVE_NS)


def test_new_token_registers_again() -> None:
    link = VoiceLink()
    link.set_session(1, 0)
    ping = next(d for d in link.timers(0) if d)
    link.received(memoryview(ping), 10)
    assert link.registered
    link.set_session(2, 100)
    assert not link.registered
    assert [d for d in link.timers(100) if d]


def test_foreign_register_echo_ignored() -> None:
    link = VoiceLink()
    link.set_session(5, 0)
    fake = bytes(VoiceDatagram(6, 1, 0, 0))
    assert link.received(memoryview(fake), 10) is None
    assert not link.registered and link.counters["bad_register_echo"] == 1


def test_voice_header_and_incoming() -> None:
    link = VoiceLink()
    link.set_session(9, 0)
    link.target = 4
    buf = bytearray(30)
    link.pack_header(buf, seq=3, capture_ns=1_000_000_000)
    assert classify(bytes(buf[:24]) + b"x") == (VOICE, 9, 4)
    assert HEADER.unpack_from(buf)[2] == 48_000  # one second of 48 kHz samples
    incoming = link.received(memoryview(bytes(VoiceDatagram(42, 3, 11, 0, b"opus"))), 20)
    assert incoming is not None
    assert (incoming.speaker, incoming.seq, incoming.media) == (42, 3, 11)
    assert bytes(incoming.payload) == b"opus"


def test_chaos_drops_about_the_percentage() -> None:
    chaos = Chaos(10.0, seed=1)
    drops = sum(chaos.drop() for _ in range(20000))
    assert 1700 < drops < 2300
    assert not any(Chaos(0.0, seed=1).drop() for _ in range(1000))
    assert all(Chaos(100.0, seed=1).drop() for _ in range(1000))


@given(st.binary(max_size=1400))
def test_fuzz_any_datagram_is_voice_or_none(data: bytes) -> None:
    link = VoiceLink()
    link.set_session(1, 0)
    result = link.received(memoryview(data), 10**12)
    if result is not None:
        assert 25 <= len(data) <= 1299


def test_media_timestamps_count_samples_from_a_random_offset_and_wrap() -> None:
    assert media_timestamp(20_000_000, 0) == 960  # one 20 ms frame
    assert media_timestamp(20_000_000, MASK) == 959  # past the u64 wrap
    big = 5 * 10**9
    assert media_timestamp(big + 20_000_000, 77) - media_timestamp(big, 77) == 960


def test_sent_timestamps_do_not_reveal_the_clock() -> None:
    offset = 0x1234_5678_9ABC_DEF0
    link = VoiceLink(clock_offset=offset)
    link.set_session(3, now=4_000_000_000)
    ping = next(d for d in link.timers(4_000_000_000) if d)
    assert VoiceDatagram.parse(ping).timestamp == (4_000_000_000 + offset) & MASK
    buf = bytearray(24)
    link.pack_header(buf, 1, capture_ns=4_000_000_000)
    assert HEADER.unpack_from(buf)[2] == (4_000_000_000 * 48_000 // 10**9 + offset) & MASK
    # The echo still gives the round trip, the offset cancelling out.
    assert link.received(memoryview(ping), 4_000_300_000) is None
    assert link.rtt_ns == 300_000


@given(st.integers(0, MASK), st.integers(0, MASK), st.integers(0, 2**62))
def test_a_register_echo_with_any_timestamp_gives_a_sane_rtt_or_is_refused(
    offset: int, stamp: int, now: int
) -> None:
    link = VoiceLink(clock_offset=offset)
    link.set_session(8, now=0)
    forged = bytes(VoiceDatagram(8, 1, stamp, 0))
    assert link.received(memoryview(forged), now) is None
    if link.registered:
        assert link.rtt_ns is not None and 0 <= link.rtt_ns <= MAX_RTT_NS
    else:
        assert link.counters["bad_register_echo"] == 1
