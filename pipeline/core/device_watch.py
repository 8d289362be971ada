"""Whether a callback-driven sound stream still runs, and when to try reopening it. Sans-I/O.

A PortAudio stream that loses its sound server or device either stops (PortAudio
finishes it after an error it cannot recover) or simply stops calling back. The
stage that owns it looks every quarter second: no callback for ``stall`` seconds,
or a stream no longer active, is a lost device. Reopening then follows a backoff
(a quarter second, doubling up to a second) until it succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass

STALL_S = 0.6  # no callback for this long: the stream is dead (it normally runs every 5 ms)
BACKOFF_S = (0.25, 0.5, 1.0)  # waits between reopening attempts; the last one repeats


@dataclass
class DeviceWatch:
    stall: float = STALL_S
    lost_since: float | None = None
    attempt: int = 0  # failed reopening attempts since the loss
    next_try: float = 0.0
    _callbacks: int = -1
    _progress_at: float = 0.0

    @property
    def lost(self) -> bool:
        return self.lost_since is not None

    def opened(self, now: float, callbacks: int = 0) -> None:
        """A stream was (re)opened and started at ``now`` (monotonic seconds), its callback
        counter at ``callbacks``."""
        self.lost_since = None
        self.attempt = 0
        self._callbacks = callbacks
        self._progress_at = now

    def check(self, now: float, callbacks: int, active: bool) -> str | None:
        """Why a running stream is dead, in words, the first time it is seen dead; else None.

        ``callbacks`` is the stream's callback counter, ``active`` PortAudio's own view.
        """
        if self.lost:
            return None
        if callbacks != self._callbacks:
            self._callbacks = callbacks
            self._progress_at = now
        if not active:
            reason = "the stream stopped"
        elif now - self._progress_at >= self.stall:
            reason = f"no audio for {now - self._progress_at:.1f} s"
        else:
            return None
        self.lost_since = now
        self.next_try = now
        self.attempt = 0
        return reason

    def due(self, now: float) -> bool:
        """Whether a lost stream should be reopened now."""
        return self.lost and now >= self.next_try

    def failed(self, now: float) -> None:
        """A reopening attempt at ``now`` failed: wait longer before the next."""
        self.attempt += 1
        self.next_try = now + BACKOFF_S[min(self.attempt, len(BACKOFF_S)) - 1]
