"""When a sound device's callbacks are due, from when they came, sans-I/O.

A device stream calls back once per block, on the device's clock; the callback
itself runs whenever the sound server and the scheduler let it, mostly within a
fraction of a millisecond of its slot and now and then a few ms after it (on a
PulseAudio null sink: median 0.2 ms, 99th percentile 3 ms, 99.9th 5.5 ms late;
a machine-wide stall 20-30 ms). A late callback then catches up: the next one comes
early by as much. So "the next frame is wanted one block after this callback ran"
is as late as this callback was, and a decode stage that plans by it makes the
frame too late whenever the late callback was the one that took a frame.

:class:`CallbackGrid` keeps the slots instead: the grid of block starts through the
earliest callbacks seen (a callback can be late, never much early), which moves
later by at most :data:`RELAX_NS` a callback when none come on it (the device's
clock drifting against ours), and starts again where a callback comes more than
:data:`JUMP_NS` after its slot (the stream restarted, or the server dropped audio:
the old grid is gone). :meth:`slot` says when this callback was due.
"""

from __future__ import annotations

from pipeline.media.audio_format import SAMPLE_RATE

RELAX_NS = 10_000  # a slot moves later by this much a callback at most (2 ms/s at 5 ms blocks)
JUMP_NS = 15_000_000  # a callback this late starts a new grid


class CallbackGrid:
    """The slots of one stream's callbacks; times are monotonic ns."""

    def __init__(self, rate: int = SAMPLE_RATE) -> None:
        self.rate = rate
        self._origin: int | None = None  # when sample 0 of the grid was due
        self._samples = 0  # samples handed over by the callbacks before this one
        self.restarts = 0  # new grids after the first

    def reset(self) -> None:
        """The stream is gone: the next callback starts a new grid."""
        self._origin = None
        self._samples = 0

    def slot(self, now: int, frames: int) -> int:
        """A callback ran at ``now`` for ``frames`` samples: when it was due (``<= now``)."""
        offset = self._samples * 1_000_000_000 // self.rate
        self._samples += frames
        if self._origin is None:
            self._origin = now - offset
            return now
        due = self._origin + offset + RELAX_NS
        jumped = now - due > JUMP_NS
        if now < due or jumped:  # on the grid or earlier than it thought, or a new grid
            if jumped:
                self.restarts += 1
            self._origin = now - offset
            return now
        self._origin += RELAX_NS
        return due
