"""pipeline/core/device_watch.py: telling a dead sound stream, and when to reopen it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.device_watch import BACKOFF_S, STALL_S, DeviceWatch


def test_a_stream_that_calls_back_is_alive() -> None:
    w = DeviceWatch()
    w.opened(0.0)
    for i in range(1, 40):  # looked at every quarter second, callbacks counting on
        assert w.check(i * 0.25, callbacks=i * 50, active=True) is None
    assert not w.lost and not w.due(10.0)


def test_no_callback_for_the_stall_time_is_a_loss_told_once() -> None:
    w = DeviceWatch()
    w.opened(0.0)
    assert w.check(0.25, callbacks=10, active=True) is None
    assert w.check(0.25 + STALL_S - 0.01, callbacks=10, active=True) is None
    reason = w.check(0.25 + STALL_S, callbacks=10, active=True)
    assert reason is not None and reason.startswith("no audio for")
    assert w.lost and w.check(5.0, callbacks=10, active=True) is None  # told once
    assert STALL_S + 0.25 <= 1.0  # looked at every 0.25 s: found within a second


def test_a_stream_that_never_started_calling_back_is_lost_too() -> None:
    w = DeviceWatch()
    w.opened(0.0)
    assert w.check(0.25, callbacks=0, active=True) is None
    assert w.check(STALL_S, callbacks=0, active=True) is not None


def test_a_stopped_stream_is_lost_at_once() -> None:
    w = DeviceWatch()
    w.opened(0.0)
    assert w.check(0.1, callbacks=3, active=False) == "the stream stopped"


def test_reopening_backs_off_then_starts_afresh() -> None:
    w = DeviceWatch()
    w.opened(0.0)
    assert w.check(1.0, callbacks=0, active=False)
    assert w.due(1.0)  # the first try is at once
    now, waits = 1.0, []
    for _ in range(5):
        w.failed(now)
        waits.append(round(w.next_try - now, 3))
        assert not w.due(w.next_try - 0.01) and w.due(w.next_try)
        now = w.next_try
    assert waits == [*BACKOFF_S, BACKOFF_S[-1], BACKOFF_S[-1]]
    assert w.attempt == 5
    w.opened(now)
    assert not w.lost and w.attempt == 0 and not w.due(now + 100)
    assert w.check(now + 0.25, callbacks=1, active=True) is None


@given(st.lists(st.tuples(st.floats(0.0, 2.0), st.integers(0, 3), st.booleans()), max_size=40))
def test_a_loss_is_reported_once_until_reopened(steps: list[tuple[float, int, bool]]) -> None:
    w = DeviceWatch()
    w.opened(0.0)
    now, callbacks, told = 0.0, 0, 0
    for dt, more, active in steps:
        now += dt
        callbacks += more
        if w.check(now, callbacks, active) is not None:
            told += 1
        assert told == (1 if w.lost else 0)
        if not active or (dt >= STALL_S and more == 0):
            assert w.lost  # a stopped or silent stream is never missed
