"""pipeline/media/vad.py: WebRTC's detector on synthetic speech, silence and room noise."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.media import synthetic
from pipeline.media.audio_format import FRAME_SAMPLES
from pipeline.media.vad import WebRtcVad


def noise(seconds: float, dbfs: float, seed: int = 2) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(int(seconds * 48_000))
    return (x * 10 ** (dbfs / 20)).astype(np.float32)


def test_speech_frames_are_speech_and_a_quiet_room_is_not() -> None:
    vad = WebRtcVad()
    room = synthetic.frames(noise(4.0, -60))
    assert sum(vad(f) for f in room) == 0
    speech = synthetic.frames(synthetic.speech_like(4.0, seed=4))
    said = [vad(f) for f in speech]  # the whole stream, in order, as the encoder feeds it
    voiced = [s for f, s in zip(speech, said, strict=True) if np.sqrt(np.mean(f * f)) > 0.05]
    assert len(voiced) > 50
    assert np.mean(voiced) > 0.9
    assert not vad(np.zeros(FRAME_SAMPLES, dtype=np.float32))


def test_the_first_frames_of_room_noise_do_not_open_the_microphone() -> None:
    # Left to itself webrtcvad calls the first 4 frames of any noise speech.
    for dbfs in (-60.0, -50.0):
        vad = WebRtcVad()
        assert not any(vad(f) for f in synthetic.frames(noise(1.0, dbfs, seed=5)))


def test_full_scale_input_is_clipped_not_wrapped() -> None:
    vad = WebRtcVad()
    vad(np.full(FRAME_SAMPLES, 4.0, dtype=np.float32))  # no overflow error, a decision


def test_a_frame_of_another_length_is_refused() -> None:
    with pytest.raises(ValueError, match="960 samples"):
        WebRtcVad()(np.zeros(480, dtype=np.float32))
