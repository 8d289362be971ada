"""The 20 ms schedule that file sources and sinks keep in place of a sound card's clock."""

from __future__ import annotations

import time
from collections.abc import Callable

from pipeline.media.audio_format import FRAME_NS

MAX_BEHIND = 10  # frames late before the schedule gives up catching up and starts afresh


class FrameClock:
    """An absolute schedule of ticks ``period_ns`` apart: no drift from sleep overshoot.

    After a stall longer than MAX_BEHIND periods it resynchronises to now instead of
    bursting through the missed ticks.
    """

    def __init__(
        self, period_ns: int = FRAME_NS, now: Callable[[], int] = time.monotonic_ns
    ) -> None:
        self.period_ns = period_ns
        self._now = now
        self._next = now()
        self.resyncs = 0

    @property
    def following_ns(self) -> int:
        """The tick after the one last waited for (or, before any wait, after the start):
        when a sink that has just played a frame wants its next one."""
        return self._next + self.period_ns

    def wait(self, sleep: Callable[[float], object]) -> None:
        """Sleep (with ``sleep(seconds)``, e.g. a stop flag's wait) until the next tick."""
        self._next += self.period_ns
        delay = self._next - self._now()
        if delay > 0:
            sleep(delay / 1e9)
        elif delay < -MAX_BEHIND * self.period_ns:
            self._next = self._now()
            self.resyncs += 1
