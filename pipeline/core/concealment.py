"""Concealment that fades instead of cutting, pure numpy: a lost stretch never turns into a
hole of digital silence, and audio that comes back after one never starts with a click.

One :class:`Fade` per speaker sees every frame that speaker plays, in order:

* :meth:`Fade.concealed` for a frame of Opus PLC: the first ``FULL_FRAMES`` play at
  PLC's own level (a short loss should sound like nothing happened), then the gain falls
  linearly, sample by sample, to zero over ``FADE_FRAMES`` frames; concealment beyond
  that is silence, reached smoothly (the talk spurt ended, or the path is gone);
* :meth:`Fade.decoded` for a frame decoded from a packet (a primary, a redundant copy or
  in-band FEC): if the gain is below one it rises back to one over ``FADE_IN_SAMPLES``;
* :meth:`Fade.silent` when the speaker plays nothing at all this tick (not started, or
  buffering again after a fade): the next decoded frame fades in from zero.

The jitter buffer conceals a dry spell for ``CONCEAL_FRAMES`` (= ``FULL_FRAMES +
FADE_FRAMES``) ticks before it goes back to buffering, so the fade is complete before a
speaker goes quiet: silence comes only after the audio faded into it.

Opus PLC fades by itself too, but not reliably to a low level (it repeats the last
pitch period, which buzzes after 60 ms) and not to zero within a bounded time; this
fade bounds both. No clock, no I/O: gains are applied in place to the frame given.
"""

from __future__ import annotations

import numpy as np

from pipeline.media.audio_format import FRAME_SAMPLES

FULL_FRAMES = 3  # concealed frames played at PLC's own level: 60 ms
FADE_FRAMES = 5  # then faded out over this many: 100 ms
CONCEAL_FRAMES = FULL_FRAMES + FADE_FRAMES  # after which the concealment is silent
FADE_IN_SAMPLES = 240  # 5 ms: audio back after a fade rises to full level this fast
TAIL_SAMPLES = 240  # 5 ms: the last audio before an unexpected end is ramped out over this


class Fade:
    """One speaker's concealment gain, carried from frame to frame."""

    def __init__(
        self,
        full_frames: int = FULL_FRAMES,
        fade_frames: int = FADE_FRAMES,
        fade_in_samples: int = FADE_IN_SAMPLES,
        frame_samples: int = FRAME_SAMPLES,
    ) -> None:
        if full_frames < 0 or fade_frames < 1 or not 1 <= fade_in_samples <= frame_samples:
            raise ValueError(
                f"fade of {full_frames} full and {fade_frames} fading frames, "
                f"fade-in of {fade_in_samples} samples: need >= 0, >= 1, 1..{frame_samples}"
            )
        self.full_frames, self.fade_frames = full_frames, fade_frames
        self.fade_in_samples = fade_in_samples
        self.gain = 1.0  # at the end of the last frame played
        self.run = 0  # concealed frames in a row, up to the last one played
        self.faded = 0  # fades that reached silence (the concealment ran out)
        self._ramp = np.empty(frame_samples, dtype=np.float32)
        self._steps = np.arange(1, frame_samples + 1, dtype=np.float32) / frame_samples
        self._rise = np.arange(1, fade_in_samples + 1, dtype=np.float32) / fade_in_samples

    def _target(self, run: int) -> float:
        return min(1.0, max(0.0, 1.0 - (run - self.full_frames) / self.fade_frames))

    def concealed(self, pcm: np.ndarray) -> np.ndarray:
        """A frame of PLC, scaled in place for how long the concealment has lasted; after
        silence it stays silent (there is nothing to continue)."""
        self.run += 1
        start = self.gain
        end = 0.0 if start == 0.0 else self._target(self.run)
        if end == 1.0 and start == 1.0:
            return pcm
        if end == 0.0 and start == 0.0:
            pcm[:] = 0.0
            return pcm
        n = len(pcm)
        ramp = self._ramp[:n]
        np.multiply(self._steps[:n], end - start, out=ramp)
        ramp += start
        pcm *= ramp
        if end == 0.0:
            self.faded += 1
        self.gain = end
        return pcm

    def decoded(self, pcm: np.ndarray) -> np.ndarray:
        """A frame decoded from a packet: faded in, in place, if the gain is below one."""
        self.run = 0
        if self.gain < 1.0:
            start = self.gain
            n = min(self.fade_in_samples, len(pcm))
            pcm[:n] *= start + (1.0 - start) * self._rise[:n]
            self.gain = 1.0
        return pcm

    def silent(self) -> None:
        """Nothing played this tick: whatever plays next starts from silence."""
        self.run = 0
        self.gain = 0.0


def ramp_out(tail: np.ndarray, samples: int = TAIL_SAMPLES) -> np.ndarray:
    """The last ``samples`` of ``tail`` ramped down to zero, in place: audio that stops
    without a fade (what time-stretching left over when the speaker's stream ended)."""
    n = min(samples, len(tail))
    if n:
        tail[len(tail) - n :] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
    return tail
