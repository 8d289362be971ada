"""pipeline/core/capture_clock.py: capture stamps on the sample clock, not the scheduler."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.capture_clock import RESYNC_FRAMES, RESYNC_NS, SLEW_NS, CaptureClock
from pipeline.media.audio_format import FRAME_NS

T0 = 10**12


def stamps(measured: list[int]) -> np.ndarray:
    clock = CaptureClock()
    return np.array([clock.stamp(m) for m in measured], dtype=np.int64)


def test_wobbling_measurements_give_regular_stamps() -> None:
    rng = np.random.default_rng(1)
    true = T0 + np.arange(500) * FRAME_NS
    wobble = rng.integers(0, 3_000_000, 500)  # up to 3 ms of measuring noise
    got = stamps([int(t) for t in true + wobble])
    steps = np.diff(got[50:])
    assert np.all(np.abs(steps - FRAME_NS) <= SLEW_NS)  # within 50 us of 20 ms each
    # ...and they stay with the measurements, not drifting away from them.
    assert abs(float(np.median(got[50:] - true[50:] - wobble.mean()))) < 1_000_000


def test_a_lone_jump_in_the_measurements_moves_nothing_much() -> None:
    measured = [T0 + k * FRAME_NS for k in range(100)]
    measured[60] -= 180_000_000  # a host API misreporting its delay, once
    got = stamps(measured)
    assert abs(int(got[60]) - measured[60] - 180_000_000) <= SLEW_NS
    assert abs(int(got[99]) - measured[99]) <= 2 * SLEW_NS


def test_samples_lost_unannounced_start_the_count_afresh() -> None:
    measured = [T0 + k * FRAME_NS for k in range(50)]
    measured += [T0 + (k + 10) * FRAME_NS for k in range(50, 100)]  # 200 ms went missing
    clock = CaptureClock()
    got = [clock.stamp(m) for m in measured]
    assert clock.resyncs == 1
    assert got[50 + RESYNC_FRAMES - 1] == measured[50 + RESYNC_FRAMES - 1]
    assert got[-1] == measured[-1]


def test_restart_takes_the_next_measurement_as_it_is() -> None:
    clock = CaptureClock()
    clock.stamp(T0)
    clock.restart()
    assert clock.stamp(T0 + 5 * 10**9) == T0 + 5 * 10**9


@given(st.lists(st.integers(-RESYNC_NS, RESYNC_NS), min_size=2, max_size=200))
def test_stamps_never_step_back_and_stay_near_the_measurements(noise: list[int]) -> None:
    measured = [T0 + k * FRAME_NS + n for k, n in enumerate(noise)]
    got = stamps(measured)
    assert np.all(np.diff(got) > 0)


def test_the_start_up_backlog_is_stale_only_in_the_streams_first_second() -> None:
    from pipeline.core.capture_clock import BACKLOG_AGE_NS, StartupBacklog

    b = StartupBacklog()
    t0 = 10**12
    old = FRAME_NS + BACKLOG_AGE_NS + 1
    # Handed over at once as the stream opens: ten frames, the first 200 ms old.
    ages = [200_000_000 - k * FRAME_NS for k in range(10)]
    assert [b.stale(t0, t0 - age) for age in ages] == [age > old - 1 for age in ages]
    assert b.dropped == sum(age >= old for age in ages) >= 6
    assert not b.stale(t0 + 20_000_000, t0 - 25_000_000)  # an ordinary frame: kept
    # Later in the call a late frame is a stall, not a backlog: it is sent.
    assert not b.stale(t0 + 2 * 10**9, t0 + 2 * 10**9 - 300_000_000)
    b.restart()  # the stream reopened: its first second again
    assert b.stale(t0 + 3 * 10**9, t0 + 3 * 10**9 - 300_000_000)
