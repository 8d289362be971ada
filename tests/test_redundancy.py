"""pipeline/core/redundancy.py: the depth chosen from a loss pattern, and the bodies."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.redundancy import (
    BURSTY,
    COPIES_FEC_HINT,
    DEPTH_HOLD,
    DOWN_HOLD,
    HEAVY_LOSS,
    MAX_BACK,
    MAX_DEPTH,
    MIN_LOSS,
    SOME_BURSTS,
    VERY_BURSTY,
    RedundancyPolicy,
    RedundantFrames,
    backs_for,
    fec_hint,
    wanted_depth,
)
from relay.protocol.voice_body import MAX_BODY, MAX_PRIMARY, Redundant, VoiceBody


def test_the_depth_follows_the_loss_pattern() -> None:
    assert wanted_depth(0.0, 0.0) == 0
    assert wanted_depth(MIN_LOSS / 2, 3.0) == 0  # too little loss to pay for
    assert wanted_depth(10.0, 1.1) == 0  # one at a time: in-band FEC covers it
    assert wanted_depth(10.0, 1.1, fec=False) == 1  # unless there is none
    assert wanted_depth(10.0, SOME_BURSTS) == 1
    assert wanted_depth(5.0, BURSTY) == 2
    assert wanted_depth(5.0, VERY_BURSTY) == 2  # a third copy only under heavy loss
    assert wanted_depth(HEAVY_LOSS, VERY_BURSTY) == MAX_DEPTH == 3
    assert wanted_depth(HEAVY_LOSS, BURSTY) == 2
    assert wanted_depth(5.0, SOME_BURSTS, fec=False) == 2
    assert wanted_depth(HEAVY_LOSS, VERY_BURSTY, fec=False) == MAX_DEPTH  # never more
    assert wanted_depth(float("nan"), 3.0) == 0


def test_the_copies_are_of_every_second_frame_from_two_back_with_fec() -> None:
    assert backs_for(0) == () and backs_for(0, fec=False) == ()
    assert backs_for(1) == (2,) and backs_for(2) == (2, 4)  # FEC rebuilds 1 back
    assert backs_for(3) == (2, 4, 8) and max(backs_for(MAX_DEPTH)) == MAX_BACK == 8
    assert backs_for(2, fec=False) == (1, 3) and backs_for(3, fec=False) == (1, 3, 7)


def test_three_copies_rebuild_any_burst_of_up_to_eight_from_the_packets_after_it() -> None:
    # Frame f is rebuilt if the next packet arrived (its FEC) or one carrying its copy did.
    backs = backs_for(MAX_DEPTH)
    for length in range(1, 12):
        lost = set(range(10, 10 + length))
        rebuilt = {f for f in lost if any(f + b not in lost for b in (1, *backs))}
        assert (rebuilt == lost) == (length <= MAX_BACK), length


def test_the_policy_rises_at_once_and_falls_after_a_hold() -> None:
    p = RedundancyPolicy()
    assert p.update([(0.0, 0.0)], 0.0) == 0
    assert p.update([(0.0, 0.0), (10.0, 2.0)], 1.0) == 2  # the worst source counts
    assert p.update([(0.0, 0.0)], 2.0) == 2
    assert p.update([(0.0, 0.0)], 2.0 + DOWN_HOLD - 0.1) == 2
    assert p.update([(0.0, 0.0)], 2.0 + DOWN_HOLD) == 0
    assert p.update([(10.0, 2.0)], 20.0) == 2
    assert p.update([(1.0, 3.0)], 21.0) == 2
    assert p.update([(10.0, 2.0)], 25.0) == 2  # wanted again: the hold starts over
    assert p.update([(1.0, 3.0)], 26.0 + DOWN_HOLD - 1) == 2
    assert RedundancyPolicy(enabled=False).update([(10.0, 2.0)], 0.0) == 0


def test_fewer_copies_wait_longer_than_none() -> None:
    # Depth 3 to 2 moves every listener's delay by four frames: it waits DEPTH_HOLD.
    p = RedundancyPolicy()
    assert p.update([(10.0, 3.0)], 0.0) == 3
    assert p.update([(10.0, 2.0)], 1.0) == 3
    assert p.update([(10.0, 2.0)], 1.0 + DOWN_HOLD) == 3
    assert p.update([(10.0, 2.0)], 1.0 + DEPTH_HOLD) == 2
    assert DEPTH_HOLD > DOWN_HOLD


def test_bodies_carry_the_last_frames_oldest_first() -> None:
    f = RedundantFrames()
    bodies = [VoiceBody.parse(f.body(i, b"P%d" % i, b"c%d" % i, (1, 2))) for i in range(5)]
    assert [b.primary for b in bodies] == [b"P%d" % i for i in range(5)]
    assert bodies[0].redundant == ()
    assert bodies[1].redundant == (Redundant(1, b"c0"),)
    assert bodies[4].redundant == (Redundant(2, b"c2"), Redundant(1, b"c3"))
    assert f.counters.copies == 7 and f.counters.copy_bytes == 7 * (3 + 2)
    f = RedundantFrames()
    bodies = [VoiceBody.parse(f.body(i, b"P%d" % i, b"c%d" % i, (2, 3))) for i in range(5)]
    assert bodies[1].redundant == ()
    assert bodies[2].redundant == (Redundant(2, b"c0"),)
    assert bodies[4].redundant == (Redundant(3, b"c1"), Redundant(2, b"c2"))


def test_depth_zero_sends_plain_bodies_and_a_gap_or_a_spurt_start_drops_the_copies() -> None:
    f = RedundantFrames()
    assert f.body(1, b"P", None, ()) == b"\x00P"
    f.body(2, b"P", b"c2", (1,))
    assert VoiceBody.parse(f.body(3, b"P", b"c3", (1,))).redundant == (Redundant(1, b"c2"),)
    assert VoiceBody.parse(f.body(5, b"P", b"c5", (1,))).redundant == ()  # 4 never sent
    marked = VoiceBody.parse(f.body(6, b"P", b"c6", (1,), marker=True))
    assert marked.marker and marked.redundant == ()
    f.reset()
    assert VoiceBody.parse(f.body(7, b"P", b"c7", (1,))).redundant == ()


def test_copies_that_do_not_fit_are_left_out_oldest_first() -> None:
    f = RedundantFrames()
    f.body(0, b"P", b"a" * 600, (1, 2))
    f.body(1, b"P", b"b" * 600, (1, 2))
    body = f.body(2, b"P" * 100, b"c", (1, 2))
    assert len(body) <= MAX_BODY
    assert VoiceBody.parse(body).redundant == (Redundant(1, b"b" * 600),)
    assert f.counters.left_out == 1
    assert VoiceBody.parse(f.body(3, b"P" * MAX_PRIMARY, b"d", (1, 2))).redundant == ()


@given(
    st.lists(
        st.tuples(st.binary(min_size=1, max_size=MAX_PRIMARY), st.binary(min_size=1, max_size=700)),
        max_size=8,
    ),
    st.integers(0, MAX_DEPTH),
    st.booleans(),
)
def test_any_frames_give_bodies_that_fit_and_parse(
    frames: list[tuple[bytes, bytes]], depth: int, fec: bool
) -> None:
    f = RedundantFrames()
    backs = backs_for(depth, fec)
    for i, (primary, copy) in enumerate(frames):
        body = f.body(i, primary, copy, backs)
        parsed = VoiceBody.parse(body)
        assert len(body) <= MAX_BODY and parsed.primary == primary
        assert len(parsed.redundant) <= depth
        assert all(r.back in backs for r in parsed.redundant)


def test_while_copies_are_sent_the_fec_hint_is_low() -> None:
    assert fec_hint(10.0, 0) == 10.0  # no copies: FEC is all there is
    assert fec_hint(10.0, 1) == fec_hint(10.0, 3) == COPIES_FEC_HINT
    assert fec_hint(1.0, 2) == 1.0  # never raised
