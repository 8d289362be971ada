"""relay/protocol/voice_crypto.py: the replay window, sealing and opening, fuzzing."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from relay.protocol.sealed_datagram import HEADER_SIZE, TAG_SIZE
from relay.protocol.voice_crypto import (
    FRESH,
    REPLAYED,
    TOO_OLD,
    WINDOW,
    Opened,
    Opener,
    ReplayWindow,
    Sealer,
    counter_start,
    direction_keys,
    tag,
)

KEY = bytes(range(32))
MEDIA = bytes(range(16))


def take(w: ReplayWindow, ctr: int) -> int:
    verdict = w.check(ctr)
    if verdict == FRESH:
        w.accept(ctr)
    return verdict


def test_in_order_then_duplicates_then_too_old() -> None:
    w = ReplayWindow()
    for c in range(100, 200):
        assert take(w, c) == FRESH
    assert take(w, 199) == REPLAYED and take(w, 150) == REPLAYED
    assert take(w, 199 - WINDOW) == TOO_OLD
    assert w.counts() == {"good": 100, "late": 0, "lost": 0, "replayed": 2, "too_old": 1}


def test_reordering_inside_the_window_passes_and_fills_the_gap() -> None:
    w = ReplayWindow()
    for c in (1, 2, 5, 3, 4, 6):
        assert take(w, c) == FRESH
    assert w.counts()["late"] == 2 and w.counts()["lost"] == 0
    assert take(w, 4) == REPLAYED


def test_a_jump_counts_the_gap_as_lost_and_forgets_the_old_window() -> None:
    w = ReplayWindow()
    take(w, 10)
    take(w, 10 + 1000)
    assert w.counts()["lost"] == WINDOW  # a gap wider than the window counts up to it
    assert take(w, 11) == TOO_OLD


@given(st.lists(st.integers(0, 300), max_size=200))
def test_no_counter_is_ever_accepted_twice(ctrs: list[int]) -> None:
    w = ReplayWindow()
    accepted: set[int] = set()
    for c in ctrs:
        if take(w, c) == FRESH:
            assert c not in accepted
            accepted.add(c)
    assert w.good == len(accepted)


def test_random_reordering_of_a_stream_loses_nothing() -> None:
    rng = random.Random(3)
    ctrs = list(range(1000))
    for i in range(0, 1000, 8):  # shuffle within blocks of 8: normal network reordering
        block = ctrs[i : i + 8]
        rng.shuffle(block)
        ctrs[i : i + 8] = block
    w = ReplayWindow()
    assert all(take(w, c) == FRESH for c in ctrs)
    assert w.lost == 0 and w.good == 1000


def sealer(sid: int = 7) -> Sealer:
    s = Sealer(sid, KEY, 1000)
    s.set_media_key(4, MEDIA)
    return s


def opener() -> Opener:
    o = Opener()
    o.add_media_key(4, MEDIA)
    return o


def test_seal_then_open() -> None:
    up = sealer().voice(5, 6, b"frame", target=0)
    up_key, _down = direction_keys(KEY)
    assert up[-TAG_SIZE:] == tag(up_key, up[:-TAG_SIZE])
    opened = opener().open(up[:-TAG_SIZE])
    assert opened == Opened(7, 5, 6, b"frame")


def test_counters_grow_and_nonces_never_repeat() -> None:
    s = sealer()
    voice, pings = [], []
    for i in range(500):
        voice.append(s.voice(1, 1, b"x")[3:15])  # the nonce: sid and ctr
        if i % 25 == 0:  # the network stage pings twice a second, between frames
            pings.append(s.ping(0)[3:15])
    assert len(set(voice)) == 500 and voice == sorted(voice)
    assert len(set(pings)) == len(pings) and pings == sorted(pings)


def test_a_listener_counts_no_loss_where_the_speaker_pinged() -> None:
    # The relay forwards voice, never pings: a ping that took a voice counter would
    # leave a hole in every listener's window, counted as a lost datagram.
    s, o = sealer(), opener()
    for i in range(200):
        assert isinstance(o.open(s.voice(i, i, b"frame")[:-TAG_SIZE]), Opened)
        if i % 25 == 0:
            s.ping(i)
    assert o.totals() == {"good": 200, "late": 0, "lost": 0, "replayed": 0, "too_old": 0}


def test_a_wrong_key_no_key_and_a_flipped_bit_are_refused_by_reason() -> None:
    up = sealer().voice(5, 6, b"frame")[:-TAG_SIZE]
    o = Opener()
    assert o.open(up) == "no_key"
    o.add_media_key(4, bytes(16))
    assert o.open(up) == "bad_auth"
    o = opener()
    for i in range(HEADER_SIZE, len(up)):
        bad = bytearray(up)
        bad[i] ^= 1
        assert o.open(bytes(bad)) == "bad_auth"
    assert isinstance(o.open(up), Opened)
    assert o.open(up) == "replayed"


def test_two_media_keys_are_kept_the_older_goes() -> None:
    o = Opener()
    for key_id in (1, 2, 3):
        o.add_media_key(key_id, MEDIA)
    s = Sealer(1, KEY, 0)
    s.set_media_key(1, MEDIA)
    assert o.open(s.voice(1, 1, b"x")[:-TAG_SIZE]) == "no_key"
    s.set_media_key(2, MEDIA)
    assert isinstance(o.open(s.voice(1, 1, b"x")[:-TAG_SIZE]), Opened)


def test_ping_answers_need_the_down_key() -> None:
    s = sealer()
    ping = s.ping(123)
    _up, down = direction_keys(KEY)
    answer = ping[:-TAG_SIZE] + tag(down, ping[:-TAG_SIZE])
    got = s.ping_answer(answer)
    assert not isinstance(got, str)
    ctr, stamp = got
    assert stamp == 123 and ctr > 1000
    assert s.ping_answer(ping) == "bad_auth"  # the up tag: our own ping reflected
    assert s.ping_answer(answer[:-1]) == "bad_length"


def test_the_counter_start_is_monotonic_across_restarts_and_hides_the_uptime() -> None:
    a = counter_start(12345, 10**12)
    b = counter_start(12345, 10**12 + 20_000_000)
    assert b - a == 20_000  # microseconds: 1000 times what 50 datagrams/s use
    assert counter_start(0, 10**12) != a


@given(st.binary(max_size=1400))
def test_fuzz_open_any_bytes_is_refused_with_a_reason(data: bytes) -> None:
    result = opener().open(data)
    assert isinstance(result, str)


@given(st.binary(max_size=100))
def test_fuzz_ping_answer_any_bytes(data: bytes) -> None:
    assert isinstance(sealer().ping_answer(data), str)
