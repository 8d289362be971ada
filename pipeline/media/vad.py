"""Voice activity detection of 20 ms frames: WebRTC's detector (``webrtcvad-wheels``).

It takes 48 kHz 16-bit frames of 10, 20 or 30 ms directly, so a frame of the rings
goes in as it is (converted to int16). Chosen by measurement against WebRTC's
noise-suppressor speech probability, an energy threshold and its own gentler modes
(``python -m bench.input_choice``, "vad", 2026-12-01, load average 20): mode 3, the
most aggressive, hearing the microphone before noise suppression and gain control,
found 96-100 % of speech frames with pink, fan and white noise up to -40 dBFS and
called 0-0.9 % of that noise alone speech; the suppressor's speech probability calls
none of it speech but misses 3-8 % of speech, an energy threshold takes loud noise
for speech (100 % of pink noise at -40 dBFS), and after the gain control mode 3 took
8 % of that pink noise for speech. Key clicks fool them all (18-45 %). About 0.1 to
0.2 ms a frame.
"""

from __future__ import annotations

import numpy as np
import webrtcvad

from pipeline.media.audio_format import FRAME_SAMPLES, SAMPLE_RATE

AGGRESSIVE = 3  # webrtcvad's mode 0..3: 3 calls the least non-speech speech
# webrtcvad calls the first 4 frames of any room noise speech while it learns the noise
# floor (measured at -60 and -50 dBFS): its first frames say "no" while it learns.
WARMUP_FRAMES = 8


class WebRtcVad:
    """``vad(frame) -> bool``: does this 960-sample float32 frame hold speech?"""

    def __init__(self, mode: int = AGGRESSIVE) -> None:
        self._vad = webrtcvad.Vad(mode)
        self._pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self._scaled = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        self._warmup = WARMUP_FRAMES

    def __call__(self, frame: np.ndarray) -> bool:
        if len(frame) != FRAME_SAMPLES:
            raise ValueError(f"a frame is {FRAME_SAMPLES} samples, got {len(frame)}")
        np.multiply(frame, 32767.0, out=self._scaled)
        np.clip(self._scaled, -32768.0, 32767.0, out=self._scaled)
        self._pcm[:] = self._scaled
        speech = bool(self._vad.is_speech(self._pcm.tobytes(), SAMPLE_RATE))
        if self._warmup:
            self._warmup -= 1
            return False
        return speech
