"""pipeline/core/voice_link.py: the network stage's sans-I/O decisions, over sealed voice."""

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
from relay.protocol.sealed_datagram import (
    HEADER,
    HEADER_SIZE,
    KIND_PING,
    KIND_VOICE,
    STAMP,
    TAG_SIZE,
    SealedHeader,
)
from relay.protocol.voice_crypto import Sealer, direction_keys, tag

KEY = bytes(range(32))
MEDIA = bytes(range(16))


def answer(ping: bytes, key: bytes = KEY) -> bytes:
    """What the relay sends back for ``ping``: the same fields under the down key."""
    _up, down = direction_keys(key)
    body = ping[:-TAG_SIZE]
    return body + tag(down, body)


def linked(sid: int = 1, now: int = 0, offset: int = 0) -> VoiceLink:
    link = VoiceLink(clock_offset=offset)
    link.set_session(sid, KEY, now)
    link.set_media_key(1, MEDIA)
    return link


def test_nothing_is_sent_without_a_session() -> None:
    link = VoiceLink()
    assert link.timers(0) == []
    assert not link.should_send()
    assert link.counters["unsent_no_session"] == 1


def test_no_voice_before_the_media_key() -> None:
    link = VoiceLink()
    link.set_session(3, KEY, 0)
    assert not link.should_send()
    link.set_media_key(1, MEDIA)
    assert link.should_send()


def test_register_until_answered_then_periodic() -> None:
    link = linked(77, now=1000)
    first = link.timers(1000)
    assert b"" in first  # keepalive
    (ping,) = [d for d in first if d]
    h = SealedHeader.parse(ping)
    assert h.kind == KIND_PING and h.sid == 77
    assert STAMP.unpack_from(ping, HEADER_SIZE)[0] == 1000
    assert link.timers(1000 + REGISTER_RETRY_NS - 1) == []
    assert len(link.timers(1000 + REGISTER_RETRY_NS)) == 1  # retried: no answer yet
    echo_at = 1000 + REGISTER_RETRY_NS + 250_000
    assert link.received(memoryview(answer(ping)), echo_at) is None
    assert link.registered and link.rtt_ns == echo_at - 1000
    assert [x for x in link.timers(echo_at + REGISTER_PERIOD_NS - 1) if x] == []
    assert [x for x in link.timers(echo_at + REGISTER_PERIOD_NS) if x]  # periodic from now on


def test_our_own_ping_sent_back_unchanged_is_no_answer() -> None:
    link = linked(5)
    ping = next(d for d in link.timers(0) if d)
    assert link.received(memoryview(ping), 10) is None  # the up key's tag, not the relay's
    assert not link.registered and link.counters["bad_register_echo"] == 1


def test_a_replayed_answer_is_refused() -> None:
    link = linked(5)
    ping = next(d for d in link.timers(0) if d)
    link.received(memoryview(answer(ping)), 10)
    assert link.counters["register_echo"] == 1
    link.received(memoryview(answer(ping)), 20)
    assert link.counters["bad_register_echo"] == 1


def test_keepalive_every_five_seconds() -> None:
    link = linked(1)
    assert b"" in link.timers(0)
    assert b"" not in link.timers(KEEPALIVE_NS - 1)
    assert b"" in link.timers(KEEPALIVE_NS)


def test_new_session_registers_again_and_keeps_the_media_key() -> None:
    link = linked(1)
    ping = next(d for d in link.timers(0) if d)
    link.received(memoryview(answer(ping)), 10)
    assert link.registered
    link.set_session(2, KEY, 100)
    assert not link.registered
    assert [d for d in link.timers(100) if d]
    assert link.should_send()


def test_foreign_answer_ignored() -> None:
    link = linked(5)
    other = Sealer(6, KEY, 0).ping(0)
    assert link.received(memoryview(answer(other)), 10) is None
    assert not link.registered and link.counters["bad_register_echo"] == 1


def test_voice_round_trip_between_two_links() -> None:
    alice, bob = linked(9), linked(10)
    alice.target = 4
    sent = alice.seal(3, 1_000_000_000, b"opus")
    h = SealedHeader.parse(sent)
    assert (h.kind, h.sid, h.target, h.key_id) == (KIND_VOICE, 9, 4, 1)
    assert b"opus" not in sent
    forwarded = sent[:-TAG_SIZE]  # the relay strips its tag
    incoming = bob.received(memoryview(forwarded), 20)
    assert incoming is not None
    assert (incoming.speaker, incoming.seq, incoming.media) == (9, 3, 48_000)
    assert bytes(incoming.payload) == b"opus"
    assert bob.received(memoryview(forwarded), 30) is None  # replayed
    assert bob.crypto_counts()["replayed"] == 1 and bob.crypto_counts()["good"] == 1


def test_counters_never_repeat_across_a_restart() -> None:
    first = linked(9, now=5_000_000_000)
    last = SealedHeader.parse(first.seal(1, 0, b"x")).ctr
    for _ in range(100):
        last = SealedHeader.parse(first.seal(1, 0, b"x")).ctr
    again = linked(9, now=5_000_000_000 + 20_000_000)  # a restarted stage, 20 ms later
    assert SealedHeader.parse(again.seal(1, 0, b"x")).ctr > last


def test_a_flipped_bit_anywhere_is_refused() -> None:
    alice, bob = linked(9), linked(10)
    good = alice.seal(3, 0, b"opus frame")[:-TAG_SIZE]
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x10
        assert bob.received(memoryview(bytes(bad)), 1) is None
    assert bob.received(memoryview(good), 2) is not None


def test_chaos_drops_about_the_percentage() -> None:
    chaos = Chaos(10.0, seed=1)
    drops = sum(chaos.drop() for _ in range(20000))
    assert 1700 < drops < 2300
    assert not any(Chaos(0.0, seed=1).drop() for _ in range(1000))
    assert all(Chaos(100.0, seed=1).drop() for _ in range(1000))


@given(st.binary(max_size=1400))
def test_fuzz_any_datagram_is_refused(data: bytes) -> None:
    link = linked(1)
    assert link.received(memoryview(data), 10**12) is None  # nobody has the media key's tags


def test_media_timestamps_count_samples_from_a_random_offset_and_wrap() -> None:
    assert media_timestamp(20_000_000, 0) == 960  # one 20 ms frame
    assert media_timestamp(20_000_000, MASK) == 959  # past the u64 wrap
    big = 5 * 10**9
    assert media_timestamp(big + 20_000_000, 77) - media_timestamp(big, 77) == 960


def test_sent_timestamps_do_not_reveal_the_clock() -> None:
    offset = 0x1234_5678_9ABC_DEF0
    link = linked(3, now=4_000_000_000, offset=offset)
    ping = next(d for d in link.timers(4_000_000_000) if d)
    assert STAMP.unpack_from(ping, HEADER_SIZE)[0] == (4_000_000_000 + offset) & MASK
    ctr = HEADER.unpack_from(ping)[4]
    assert ctr != 4_000_000_000 // 1000 + 1  # the counter is offset too
    # The echo still gives the round trip, the offset cancelling out.
    assert link.received(memoryview(answer(ping)), 4_000_300_000) is None
    assert link.rtt_ns == 300_000


@given(st.integers(0, MASK), st.integers(0, MASK), st.integers(0, 2**62))
def test_an_answer_with_any_timestamp_gives_a_sane_rtt_or_is_refused(
    offset: int, stamp: int, now: int
) -> None:
    link = linked(8, offset=offset)
    forged = Sealer(8, KEY, 0).ping(stamp)
    assert link.received(memoryview(answer(forged)), now) is None
    if link.registered:
        assert link.rtt_ns is not None and 0 <= link.rtt_ns <= MAX_RTT_NS
    else:
        assert link.counters["bad_register_echo"] == 1


def test_a_new_session_forgets_the_speakers_windows() -> None:
    alice, bob = linked(9), linked(10)
    heard = alice.seal(1, 0, b"x")[:-TAG_SIZE]
    assert bob.received(memoryview(heard), 1) is not None
    bob.set_session(10, bytes(32), 2)  # a restarted relay: a new key, ids from 1 again
    stranger = VoiceLink()  # another user given id 9 by that relay, its counter far lower
    stranger.set_session(9, KEY, 0)
    stranger.set_media_key(1, MEDIA)
    assert bob.received(memoryview(stranger.seal(1, 0, b"y")[:-TAG_SIZE]), 3) is not None


def test_unanswered_pings_take_voice_to_the_tunnel_and_answers_bring_it_back() -> None:
    """UDP blocked from the start: voice can go (through the tunnel) though never registered;
    then the relay answers for 2 s and voice is back on UDP."""
    link = linked()
    t = 0
    while link.path == "udp":
        for d in link.timers(t):
            assert d == b"" or d[1] == 1  # pings and keepalives only; nobody answers
        link.health.update(t)
        t += 50_000_000
    assert 1_500_000_000 <= t <= 1_600_000_000
    assert link.voice_ready and not link.registered and link.should_send()
    while link.path == "tcp":
        for d in link.timers(t):
            if d:
                link.received(memoryview(answer(d)), t + 1_000_000)
        link.health.update(t)
        t += 50_000_000
    assert link.registered and link.health.switches == 2
    assert link.next_timer(t) > t
