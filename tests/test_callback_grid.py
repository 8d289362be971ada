"""The slots of a sound device's callbacks (pipeline/core/callback_grid.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.callback_grid import JUMP_NS, RELAX_NS, CallbackGrid

BLOCK = 240
BLOCK_NS = 5_000_000  # 240 samples at 48 kHz
T0 = 1_000_000_000


def test_callbacks_on_time_are_their_own_slots() -> None:
    g = CallbackGrid()
    for k in range(100):
        now = T0 + k * BLOCK_NS
        assert g.slot(now, BLOCK) == now


def test_a_late_callback_gets_the_slot_it_was_late_for() -> None:
    g = CallbackGrid()
    for k in range(10):
        g.slot(T0 + k * BLOCK_NS, BLOCK)
    late = T0 + 10 * BLOCK_NS + 3_000_000  # 3 ms late: the frame it takes is due 3 ms sooner
    assert g.slot(late, BLOCK) == T0 + 10 * BLOCK_NS + RELAX_NS
    # The next one catches up and is on the grid again.
    assert g.slot(T0 + 11 * BLOCK_NS + 100_000, BLOCK) == T0 + 11 * BLOCK_NS + 2 * RELAX_NS


def test_an_early_callback_moves_the_grid_at_once() -> None:
    g = CallbackGrid()
    for k in range(10):
        g.slot(T0 + k * BLOCK_NS, BLOCK)
    early = T0 + 10 * BLOCK_NS - 400_000
    assert g.slot(early, BLOCK) == early
    assert g.slot(early + BLOCK_NS, BLOCK) == early + BLOCK_NS


def test_a_device_clock_that_runs_slow_is_followed() -> None:
    """Callbacks 300 ppm slower than ours: each is 1.5 us later than the grid says, well
    within what the grid may move a callback, so every slot stays within that of now."""
    g = CallbackGrid()
    period = BLOCK_NS * 10_003 // 10_000
    for k in range(20_000):  # 100 s
        now = T0 + k * period
        assert now - RELAX_NS <= g.slot(now, BLOCK) <= now


def test_a_stream_that_stopped_starts_a_new_grid() -> None:
    """A callback far behind its slot (the server dropped audio, or stalled): the old
    grid is gone, and its slots would all be in the past."""
    g = CallbackGrid()
    for k in range(10):
        g.slot(T0 + k * BLOCK_NS, BLOCK)
    resumed = T0 + 10 * BLOCK_NS + JUMP_NS + 1_000_000
    assert g.slot(resumed, BLOCK) == resumed
    assert g.restarts == 1
    assert g.slot(resumed + BLOCK_NS, BLOCK) == resumed + BLOCK_NS


def test_reset_forgets_the_grid() -> None:
    g = CallbackGrid()
    for k in range(10):
        g.slot(T0 + k * BLOCK_NS, BLOCK)
    g.reset()
    later = T0 + 10 * BLOCK_NS + 7_000_000  # a reopened stream, on a phase of its own
    assert g.slot(later, BLOCK) == later
    assert g.slot(later + BLOCK_NS, BLOCK) == later + BLOCK_NS
    assert g.restarts == 0


@given(st.lists(st.integers(0, 30_000_000), min_size=1, max_size=300))
def test_a_slot_is_never_after_its_callback_nor_before_its_true_slot(lateness: list[int]) -> None:
    """Whatever the lateness of each callback on a steady 5 ms grid: a slot lies between
    the true one and the callback, and once one callback came on time, later slots are
    late by no more than the grid relaxes since (until one came so late it began again)."""
    g = CallbackGrid()
    on_time: int | None = None  # the last callback that came in its slot
    for k, late in enumerate(lateness):
        true_slot = T0 + k * BLOCK_NS
        now = true_slot + late
        slot = g.slot(now, BLOCK)
        assert true_slot <= slot <= now
        if late == 0:
            on_time = k
        if on_time is not None and g.restarts == 0:
            assert slot - true_slot <= RELAX_NS * (k - on_time)
