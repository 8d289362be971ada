"""Noise suppression and automatic gain control of the microphone's 20 ms frames.

WebRTC's audio processing module (``pywebrtc-audio``: its noise suppressor and AGC2
gain controller), at 48 kHz on float32 frames. Chosen by measurement against
``speexdsp-ns`` and RNNoise (``pyrnnoise``'s library), ``python -m bench.input_choice``,
"processing" (2026-12-01, load average 20): wideband PESQ against the clean speech with
pink, white and fan noise at 10 dB SNR 1.74 / 1.75 / 2.55 (none: 1.16 / 1.14 / 1.54;
speexdsp 1.51 / 1.55 / 2.22; RNNoise 1.60 / 1.66 / 1.49), 0.3 ms a frame (speexdsp 0.5,
RNNoise 9: a fifth of a core), 7 ms of delay (speexdsp 10, RNNoise 20). speexdsp's
binding has no gain control; RNNoise's bundled build also distorts clean speech (PESQ
1.6). The gain controller is set to 10 dB of headroom and at most 30 dB of gain: at
its defaults it drives speech into its limiter (PESQ of clean speech 2.5; 3.9 so set,
4.3 without gain control). It also brings a room's residual noise back up when nobody
speaks, so the voice activity detector hears the microphone before all this.

Echo cancellation (the same library's AEC3) would need what the speaker plays as a
reference in this process, which the pipeline does not route here: not done.
"""

from __future__ import annotations

import numpy as np
import pywebrtc_audio

from pipeline.media.audio_format import FRAME_SAMPLES, SAMPLE_RATE

NS_LEVEL = 2  # 0..3: 6, 12, 18, 21 dB of suppression; the levels measured alike, 2 is the middle
AGC_HEADROOM_DB = 10.0
AGC_MAX_GAIN_DB = 30.0


class InputProcessor:
    """``process(frame) -> frame``: one 960-sample float32 frame, cleaned. Its state
    follows the stream, so one processor serves one microphone, frame after frame."""

    def __init__(self, noise_suppression: bool = True, gain_control: bool = True) -> None:
        self._ns: pywebrtc_audio.NoiseSuppressor | None = None
        self.noise_suppression = noise_suppression
        self._agc = (
            pywebrtc_audio.GainController(
                sample_rate=SAMPLE_RATE,
                headroom_db=AGC_HEADROOM_DB,
                max_gain_db=AGC_MAX_GAIN_DB,
            )
            if gain_control
            else None
        )

    @property
    def noise_suppression(self) -> bool:
        return self._ns is not None

    @noise_suppression.setter
    def noise_suppression(self, on: bool) -> None:
        """Turn the noise suppressor on (a fresh one: it learns the room's noise again
        within a few frames) or off, at run time; the gain control keeps its state."""
        if on and self._ns is None:
            self._ns = pywebrtc_audio.NoiseSuppressor(sample_rate=SAMPLE_RATE, level=NS_LEVEL)
        elif not on:
            self._ns = None

    def process(self, frame: np.ndarray) -> np.ndarray:
        if len(frame) != FRAME_SAMPLES:
            raise ValueError(f"a frame is {FRAME_SAMPLES} samples, got {len(frame)}")
        out = np.ascontiguousarray(frame, dtype=np.float32)
        if self._ns is not None:
            out = self._ns.process(out)
        if self._agc is not None:
            out = self._agc.process(out)
        return out

    @property
    def gain_db(self) -> float:
        """The gain controller's gain now (0 without one)."""
        return float(self._agc.gain_db) if self._agc is not None else 0.0
