"""Capture timestamps that follow the sound card's sample clock, not the scheduler. Sans-I/O.

A frame's capture instant becomes its media timestamp, and a listener's jitter
buffer reads every wobble in those timestamps as network jitter. PortAudio's
ADC time, seen from a callback, wobbles by the callback's scheduling delay and
now and then jumps (a host API that misreports its delay). The sound card's
samples, though, are perfectly regular: frame k starts k * 960 samples after
frame 0. So the stamp is ``origin + k * FRAME_NS``, and ``origin`` only slews
towards what the ADC times say (quickly for the first half second, then at
most ``SLEW_NS`` per frame: enough for any crystal's drift, too little for a
jump to matter). A gap in the samples (an input overflow, a reopened stream, or
one PortAudio recovered from without saying: the measurements stay more than
``RESYNC_NS`` away for ``RESYNC_FRAMES`` frames in a row) starts afresh.
"""

from __future__ import annotations

from pipeline.media.audio_format import FRAME_NS

SETTLE_FRAMES = 25  # the first half second follows the measurements closely
SETTLE_SLEW_NS = 2_000_000
SLEW_NS = 50_000  # then at most 50 us per 20 ms frame (2.5 ms/s, 2500 ppm)
RESYNC_NS = 10_000_000
RESYNC_FRAMES = 5


class CaptureClock:
    def __init__(self) -> None:
        self._origin = 0
        self._k = 0
        self._started = False
        self._off = 0  # frames in a row measured more than RESYNC_NS away
        self.resyncs = 0

    def restart(self) -> None:
        """Samples were lost or the stream reopened: the next frame starts a new count."""
        self._started = False

    def stamp(self, measured_ns: int) -> int:
        """The capture instant to stamp the next frame with, given its measured ADC time."""
        if not self._started:
            self._started = True
            self._k = 0
            self._origin = measured_ns
            return measured_ns
        self._k += 1
        ideal = self._origin + self._k * FRAME_NS
        self._off = self._off + 1 if abs(measured_ns - ideal) > RESYNC_NS else 0
        if self._off >= RESYNC_FRAMES:
            self.resyncs += 1
            self._off = 0
            self._started = False
            return self.stamp(measured_ns)
        limit = SETTLE_SLEW_NS if self._k < SETTLE_FRAMES else SLEW_NS
        step = max(-limit, min(limit, measured_ns - ideal))
        self._origin += step
        return ideal + step


BACKLOG_AGE_NS = 60_000_000  # beyond its own 20 ms, a frame this old when it is complete
BACKLOG_WINDOW_NS = 1_000_000_000  # in a stream's first second is its start-up backlog


class StartupBacklog:
    """The frames a capture stream hands over at once as it starts, to be dropped.

    An input stream that has just opened may deliver what its host buffered meanwhile
    in one go (200 ms of it through PulseAudio), and a loaded machine starting the
    client's processes may hold its first callbacks back for longer. Sent, those frames
    arrive together, their age reads as the path's jitter at a listener's very first
    start (which cannot tell them from a network stall), and the call plays that much
    behind for the 40 s its target takes to decay: calls of 160-300 ms through
    PulseAudio. In the stream's first second, a frame completed more than
    ``BACKLOG_AGE_NS`` after its own 20 ms (from its first sample's capture instant to
    the callback that completes it) is stale: nobody could have heard it in time.
    """

    def __init__(self) -> None:
        self._opened: int | None = None
        self.dropped = 0

    def restart(self) -> None:
        """The stream (re)opened: its first second starts with its next frame."""
        self._opened = None

    def stale(self, now_ns: int, stamp_ns: int) -> bool:
        """Whether the frame captured from ``stamp_ns``, complete at ``now_ns``, is part
        of the start-up backlog (counted in ``dropped``)."""
        if self._opened is None:
            self._opened = now_ns
        late = now_ns - self._opened < BACKLOG_WINDOW_NS and (
            now_ns - stamp_ns > FRAME_NS + BACKLOG_AGE_NS
        )
        self.dropped += late
        return late
