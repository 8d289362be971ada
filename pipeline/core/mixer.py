"""Sum the active speakers' frames and soft-clip the result, allocation-free.

The soft clip is linear up to the knee (0.9) and above it bends smoothly toward
full scale with a tanh, so one loud speaker is untouched and a pile-up of speakers
saturates gently instead of wrapping or clipping hard:

    y = x                                        for |x| <= knee
    y = sign(x) * (knee + h * tanh((|x| - knee) / h)),   h = 1 - knee, otherwise

which is continuous with slope 1 at the knee and never exceeds full scale (in
float32 it reaches exactly 1.0 only far above the knee). Every step writes
into preallocated scratch with numpy's ``out=``, so a call allocates no array (the
caller may also pass the output buffer, e.g. a ring slot from ``Ring.claim()``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.media.audio_format import FRAME_SAMPLES

KNEE = 0.9


class Mixer:
    def __init__(self, frame_samples: int = FRAME_SAMPLES, knee: float = KNEE) -> None:
        if not 0.0 < knee < 1.0:
            raise ValueError(f"knee {knee} must be in (0, 1)")
        self.frame_samples = frame_samples
        self.knee = np.float32(knee)
        self._head = np.float32(1.0 - knee)
        self._inv_head = np.float32(1.0 / (1.0 - knee))
        self._out = np.zeros(frame_samples, dtype=np.float32)
        self._mag = np.zeros(frame_samples, dtype=np.float32)
        self._over = np.zeros(frame_samples, dtype=np.float32)
        self._mask = np.zeros(frame_samples, dtype=np.bool_)

    def mix(self, frames: Sequence[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
        """Sum ``frames`` (float32[frame_samples] each) into ``out`` and soft-clip it.

        Without ``out`` the result is an internal buffer, valid until the next call.
        No frames give silence.
        """
        y = self._out if out is None else out
        if y.shape != (self.frame_samples,) or y.dtype != np.float32:
            raise ValueError(f"out must be float32[{self.frame_samples}]")
        if not frames:
            y.fill(0.0)
            return y
        for f in frames:
            if f.shape != (self.frame_samples,):
                raise ValueError(f"a frame is {self.frame_samples} samples, got {f.shape}")
        np.copyto(y, frames[0], casting="same_kind")
        for f in frames[1:]:
            np.add(y, f, out=y, casting="same_kind")
        mag, over, mask = self._mag, self._over, self._mask
        np.abs(y, out=mag)
        np.greater(mag, self.knee, out=mask)
        if not mask.any():
            return y
        # over = knee + head * tanh((|y| - knee) / head), then restore the sign.
        np.subtract(mag, self.knee, out=over)
        np.multiply(over, self._inv_head, out=over)
        np.tanh(over, out=over)
        np.multiply(over, self._head, out=over)
        np.add(over, self.knee, out=over)
        np.copysign(over, y, out=over)
        np.copyto(y, over, where=mask)
        return y
