"""pipeline/core/pacer.py: when the decode stage makes each playback frame."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.pacer import (
    LEAD_MAX_NS,
    LEAD_MIN_NS,
    LEAD_START_NS,
    LEAD_WINDOW_NS,
    MID_TAKE_MAX_NS,
    MID_TAKE_NS,
    SAFETY_NS,
    STARVE_BOOST_NS,
    STARVE_HOLD_NS,
    Pacer,
)
from pipeline.media.audio_format import BLOCK_NS, FRAME_NS

MS = 1_000_000


def test_a_frame_is_made_lead_before_the_sink_wants_it() -> None:
    p = Pacer()
    due = 1_000 * MS
    assert p.render_at(990 * MS, 0, due) == due - LEAD_START_NS
    # One already made: the next is for the frame after, whether the sink took it or not.
    assert p.render_at(995 * MS, 1, due) == due + FRAME_NS - LEAD_START_NS
    assert p.render_at(1_001 * MS, 0, due + FRAME_NS) == due + FRAME_NS - LEAD_START_NS


def test_a_sink_that_has_not_started_or_stopped_gets_one_frame_and_no_more() -> None:
    p = Pacer()
    assert p.render_at(5 * MS, 0, 0) == 5 * MS  # not said yet: one now
    assert p.render_at(5 * MS, 1, 0) is None  # and then nothing until it takes it
    due = 100 * MS
    later = due + FRAME_NS + 1  # more than a frame past its own deadline
    assert p.render_at(later, 1, due) is None
    assert p.render_at(later, 0, due) == later
    assert p.stats.stalled == 1


def test_the_lead_is_the_worst_lateness_of_the_last_window_plus_the_safety() -> None:
    p = Pacer()
    t = 0
    p.rendered(t, t + 1 * MS)
    assert p.lead_ns == LEAD_START_NS  # one frame's lateness says little yet
    for _ in range(LEAD_WINDOW_NS // FRAME_NS):
        t += FRAME_NS
        p.rendered(t, t + 1 * MS)
    for late in (1 * MS, 4 * MS, 2 * MS):
        t += FRAME_NS
        p.rendered(t, t + late)
    assert p.lead_ns == 4 * MS + SAFETY_NS
    for _ in range(LEAD_WINDOW_NS // FRAME_NS):  # the 4 ms frame ages out of the window
        t += FRAME_NS
        p.rendered(t, t + 1 * MS)
    assert p.lead_ns == 1 * MS + SAFETY_NS
    t += FRAME_NS
    p.rendered(t, t + 50 * MS)  # a stall: at once
    assert p.lead_ns == 52 * MS


def test_the_window_is_ten_seconds_whatever_the_block() -> None:
    p = Pacer(frame_ns=BLOCK_NS)
    t = 0
    p.rendered(t, t + 4 * MS)
    for _ in range(LEAD_WINDOW_NS // BLOCK_NS - 1):  # 2,000 blocks of 5 ms: not yet out
        t += BLOCK_NS
        p.rendered(t, t + 1 * MS)
    assert p.lead_ns == 4 * MS + SAFETY_NS
    t += BLOCK_NS
    p.rendered(t, t + 1 * MS)
    assert p.lead_ns == 1 * MS + SAFETY_NS
    # Blocks made lead before they are due, as many ahead as the lead needs.
    due = 1_000 * MS
    assert p.render_at(990 * MS, 1, due) == due + BLOCK_NS - p.lead_ns


def test_the_lead_stays_within_its_bounds() -> None:
    p = Pacer()
    for _ in range(LEAD_WINDOW_NS // FRAME_NS):  # past the first window's floor
        p.rendered(0, 0)
    assert p.lead_ns == LEAD_MIN_NS
    p.rendered(0, 10 * FRAME_NS)
    assert p.lead_ns == LEAD_MAX_NS


def test_a_starved_sink_raises_the_lead_for_a_while() -> None:
    p = Pacer()
    p.sink_starved(7, 0)  # the first look only learns the count
    p.rendered(0, 1 * MS)
    base = p.lead_ns
    p.sink_starved(8, 1 * MS)
    assert p.lead_ns == base + STARVE_BOOST_NS and p.stats.starved == 8
    p.sink_starved(8, 2 * MS)  # the same count again: nothing new
    assert p.lead_ns == base + STARVE_BOOST_NS
    p.sink_starved(8, 1 * MS + STARVE_HOLD_NS)
    assert p.lead_ns == base


def test_a_sink_caught_between_its_take_and_its_due_is_looked_at_again_not_planned_early() -> None:
    p = Pacer()
    due = 1_000 * MS
    assert p.render_at(985 * MS, 1, due, taken=7) == due + FRAME_NS - LEAD_START_NS
    # The sink took frame 8 (pending 0) but has not yet said when it wants the next: the
    # old due would plan that one now, a frame early.
    assert p.render_at(1_000 * MS, 0, due, taken=8) == 1_000 * MS + MID_TAKE_NS
    assert p.render_at(1_000 * MS + MID_TAKE_NS, 0, due + FRAME_NS, taken=8) == (
        due + FRAME_NS - LEAD_START_NS
    )
    # A sink that died between the two stores is, after a while, planned as it stands.
    p = Pacer()
    p.render_at(985 * MS, 1, due, taken=7)
    assert p.render_at(1_000 * MS, 0, due, taken=8) == 1_000 * MS + MID_TAKE_NS
    assert p.render_at(1_000 * MS + MID_TAKE_MAX_NS, 0, due, taken=8) == due - LEAD_START_NS


@given(
    st.lists(st.tuples(st.integers(0, 40 * MS), st.integers(0, 30 * MS)), max_size=300),
)
def test_a_sink_that_keeps_its_ticks_never_has_more_than_three_frames_ahead(
    steps: list[tuple[int, int]],
) -> None:
    """A clocked sink (taking a frame each 20 ms tick, a little late at times) and a stage
    that looks at arbitrary moments and is late by any amount: what is made ahead stays
    bounded, and frames are made at all."""
    p = Pacer()
    tick = 10**12
    made = taken = 0
    now = tick - FRAME_NS
    for look_gap, late in steps:
        now += look_gap
        while tick <= now:  # the sink's takes up to now
            if made > taken:
                taken += 1
            tick += FRAME_NS
        at = p.render_at(now, made - taken, tick, taken)
        if at is not None and at <= now:
            made += 1
            p.rendered(at, now + late)
        assert made - taken <= 3
        assert LEAD_MIN_NS <= p.lead_ns <= LEAD_MAX_NS
    if sum(g for g, _ in steps) > 10 * FRAME_NS and all(g <= FRAME_NS for g, _ in steps):
        assert made > 0


def test_a_sink_that_has_not_said_gets_enough_blocks_to_last_until_the_next_look() -> None:
    p = Pacer(frame_ns=BLOCK_NS)  # 5 ms blocks: one alone is gone before the next look
    assert [p.render_at(5 * MS, n, 0) for n in range(4)] == [5 * MS, 5 * MS, 5 * MS, None]
