"""pipeline/media/synthetic.py: generated signals and the alignment of sent and heard."""

from __future__ import annotations

import numpy as np

from pipeline.media import synthetic
from pipeline.media.audio_format import FRAME_SAMPLES, SAMPLE_RATE


def test_tone_frequency_and_level() -> None:
    x = synthetic.tone(1.0, 1000.0, 0.5)
    assert len(x) == SAMPLE_RATE and x.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(x))
    assert int(np.argmax(spectrum)) == 1000
    assert abs(float(np.max(np.abs(x))) - 0.5) < 1e-3


def test_speech_like_is_voiced_with_pauses_and_deterministic() -> None:
    a = synthetic.speech_like(4.0, seed=3)
    assert np.array_equal(a, synthetic.speech_like(4.0, seed=3))
    assert not np.array_equal(a, synthetic.speech_like(4.0, seed=4))
    frames = synthetic.frames(a)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    assert (rms < 0.005).any() and (rms > 0.05).any()  # pauses and speech
    spectrum = np.abs(np.fft.rfft(a)) ** 2
    freqs = np.fft.rfftfreq(len(a), 1 / SAMPLE_RATE)
    assert spectrum[(freqs > 80) & (freqs < 4000)].sum() > 5 * spectrum[freqs > 8000].sum()


def test_frames_pads_the_tail() -> None:
    f = synthetic.frames(np.ones(FRAME_SAMPLES + 1, dtype=np.float32))
    assert f.shape == (2, FRAME_SAMPLES) and f[1, 0] == 1 and f[1, 1] == 0


def test_align_finds_the_lag() -> None:
    sent = synthetic.speech_like(2.0, seed=2)
    heard = np.concatenate([np.zeros(1234, dtype=np.float32), sent * 0.7])
    lag, corr = synthetic.align(sent, heard, max_lag=5000)
    assert lag == 1234 and corr > 0.99
    _lag, corr = synthetic.align(sent, np.zeros_like(heard), max_lag=5000)
    assert corr == 0.0


def test_align_windows_survives_a_one_frame_shift_midway() -> None:
    # What a jitter buffer growing by a frame mid-call does to the recording.
    sent = synthetic.speech_like(8.0, seed=7)
    half = len(sent) // 2
    heard = np.concatenate(
        [np.zeros(4800, np.float32), sent[:half], np.zeros(FRAME_SAMPLES, np.float32), sent[half:]]
    )
    assert synthetic.align(sent, heard, max_lag=len(heard) - SAMPLE_RATE)[1] < 0.7
    assert synthetic.align_windows(sent, heard) > 0.95
    assert synthetic.align_windows(sent, np.zeros_like(heard)) == 0.0
