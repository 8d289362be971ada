"""pipeline/media/frame_clock.py: an absolute 20 ms schedule with an injected clock."""

from __future__ import annotations

from pipeline.media.frame_clock import MAX_BEHIND, FrameClock


class FakeTime:
    def __init__(self) -> None:
        self.t = 1_000_000_000
        self.sleeps: list[float] = []

    def now(self) -> int:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += int(seconds * 1e9) + 300_000  # every sleep overshoots by 0.3 ms


def test_overshoot_does_not_accumulate() -> None:
    ft = FakeTime()
    clock = FrameClock(20_000_000, ft.now)
    start = ft.t
    for _ in range(1000):
        ft.t += 1_000_000  # 1 ms of work per frame
        clock.wait(ft.sleep)
    # 1000 ticks later we are at tick 1000 plus one overshoot, not 1000 overshoots.
    assert abs((ft.t - start) - 1000 * 20_000_000) <= 400_000
    assert clock.resyncs == 0


def test_small_lateness_is_caught_up_without_sleeping() -> None:
    ft = FakeTime()
    clock = FrameClock(20_000_000, ft.now)
    ft.t += 45_000_000  # one stall of 2+ frames
    clock.wait(ft.sleep)
    clock.wait(ft.sleep)
    assert ft.sleeps == []  # both ticks already due: no sleep, no burst beyond them
    clock.wait(ft.sleep)
    assert len(ft.sleeps) == 1


def test_long_stall_resyncs_instead_of_bursting() -> None:
    ft = FakeTime()
    clock = FrameClock(20_000_000, ft.now)
    ft.t += (MAX_BEHIND + 5) * 20_000_000
    clock.wait(ft.sleep)
    assert clock.resyncs == 1
    clock.wait(ft.sleep)
    assert len(ft.sleeps) == 1 and abs(ft.sleeps[0] - 0.02) < 1e-6
