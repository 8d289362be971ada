"""Noise suppression and automatic gain control of the microphone's 20 ms frames.

WebRTC's audio processing module (``pywebrtc-audio``: its noise suppressor and AGC2
gain controller), at 48 kHz on float32 frames. Chosen by measurement against
``speexdsp-ns`` and RNNoise (``pyrnnoise``), ``python -m bench.input_choice``,
"processing": on speech with added pink, white, fan and keyboard noise its PESQ gain
is close to speexdsp's (which has no gain control in its binding) while RNNoise's
build costs about 9 ms a frame; it adds ~7 ms of delay (the suppressor's overlap).
The gain controller is set to 10 dB of headroom and at most 30 dB of gain: at its
defaults it drives speech into its limiter (PESQ of clean speech 2.5 instead of 4.3).

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
        self._ns = (
            pywebrtc_audio.NoiseSuppressor(sample_rate=SAMPLE_RATE, level=NS_LEVEL)
            if noise_suppression
            else None
        )
        self._agc = (
            pywebrtc_audio.GainController(
                sample_rate=SAMPLE_RATE,
                headroom_db=AGC_HEADROOM_DB,
                max_gain_db=AGC_MAX_GAIN_DB,
            )
            if gain_control
            else None
        )

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
