"""pipeline/core/audio_test.py: the settings' test tone and the test's clock, on frames."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.audio_test import (
    FADE_SECONDS,
    TONE_HZ,
    TONE_LEVEL,
    AudioTestError,
    TestClock,
    TestTone,
    check_kind,
)
from pipeline.media.audio_format import FRAME_SAMPLES, SAMPLE_RATE


def play(tone: TestTone, frames: int, base: float = 0.0) -> tuple[np.ndarray, list[bool]]:
    out, added = [], []
    for _ in range(frames):
        frame = np.full(FRAME_SAMPLES, base, dtype=np.float32)
        added.append(tone.add_to(frame))
        out.append(frame)
    return np.concatenate(out), added


def test_the_tone_lasts_its_seconds_at_its_pitch_and_level_then_leaves_frames_alone() -> None:
    tone = TestTone()
    assert not tone.playing and not tone.add_to(np.zeros(FRAME_SAMPLES, dtype=np.float32))
    tone.start(1.0)
    audio, added = play(tone, 60)
    assert added == [True] * 50 + [False] * 10  # 1 s: 50 frames, then nothing
    assert not audio[50 * FRAME_SAMPLES :].any()
    body = audio[FRAME_SAMPLES : 49 * FRAME_SAMPLES]
    spectrum = np.abs(np.fft.rfft(body))
    freqs = np.fft.rfftfreq(len(body), 1 / SAMPLE_RATE)
    assert abs(freqs[int(np.argmax(spectrum))] - TONE_HZ) < 2
    assert np.max(np.abs(body)) == pytest.approx(TONE_LEVEL, rel=0.01)
    fade = round(FADE_SECONDS * SAMPLE_RATE)  # no click: it starts and ends from silence
    assert abs(audio[0]) < 1e-6 and np.max(np.abs(audio[:10])) < 0.01
    assert np.max(np.abs(audio[fade : 2 * fade])) > 0.2
    assert np.max(np.abs(audio[50 * FRAME_SAMPLES - 10 : 50 * FRAME_SAMPLES])) < 0.01


def test_the_tone_is_added_to_what_plays_and_kept_within_full_scale() -> None:
    tone = TestTone()
    tone.start(0.1)
    loud, _ = play(tone, 5, base=0.9)
    assert np.max(loud) == 1.0 and np.min(loud) >= -1.0
    tone.start(0.1)
    quiet, _ = play(tone, 5, base=0.1)
    assert np.mean(quiet) == pytest.approx(0.1, abs=0.01)  # the mix is still in it


def test_stop_ends_the_tone_at_once_and_zero_seconds_is_none() -> None:
    tone = TestTone()
    tone.start(5.0)
    tone.stop()
    assert not tone.playing
    tone.start(0.0)
    assert not tone.playing


def test_the_clock_runs_its_seconds_and_stops() -> None:
    clock = TestClock()
    assert not clock.active(0.0)
    clock.start(10.0, 5.0)
    assert clock.active(10.0) and clock.active(14.99) and not clock.active(15.0)
    clock.start(20.0, -1.0)
    assert not clock.active(20.0)
    clock.start(20.0, 3.0)
    clock.stop()
    assert not clock.active(20.5)


def test_only_the_tests_there_are_are_taken() -> None:
    assert check_kind("tone") == "tone"
    with pytest.raises(AudioTestError, match="no audio test 'x'"):
        check_kind("x")
