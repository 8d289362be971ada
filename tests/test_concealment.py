"""pipeline/core/concealment.py: the fade of a long concealment and the fade back in."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.concealment import (
    CONCEAL_FRAMES,
    FADE_FRAMES,
    FADE_IN_SAMPLES,
    FULL_FRAMES,
    Fade,
    ramp_out,
)
from pipeline.media.audio_format import FRAME_SAMPLES


def ones() -> np.ndarray:
    return np.ones(FRAME_SAMPLES, dtype=np.float32)


def test_a_short_concealment_plays_at_full_level() -> None:
    fade = Fade()
    for _ in range(FULL_FRAMES):
        assert np.array_equal(fade.concealed(ones()), ones())
    assert fade.gain == 1.0 and fade.run == FULL_FRAMES


def test_a_long_concealment_fades_to_silence_without_a_step() -> None:
    fade = Fade()
    audio = np.concatenate([fade.concealed(ones()).copy() for _ in range(CONCEAL_FRAMES + 2)])
    fading = audio[FULL_FRAMES * FRAME_SAMPLES : CONCEAL_FRAMES * FRAME_SAMPLES]
    assert np.all(np.diff(fading) <= 0) and np.all(fading[:-1] > 0)
    assert float(np.abs(np.diff(audio)).max()) <= 1.0 / (FADE_FRAMES * FRAME_SAMPLES) + 1e-6
    assert audio[CONCEAL_FRAMES * FRAME_SAMPLES - 1] == pytest.approx(0.0, abs=1e-6)
    assert not audio[CONCEAL_FRAMES * FRAME_SAMPLES :].any()  # past the fade: silence
    assert fade.faded == 1


@pytest.mark.parametrize("run", range(1, CONCEAL_FRAMES + 1))
def test_no_frame_of_a_concealment_within_the_fade_is_silent(run: int) -> None:
    fade = Fade()
    assert all(fade.concealed(ones()).any() for _ in range(run))


def test_audio_after_a_partial_fade_rises_back_smoothly() -> None:
    fade = Fade()
    for _ in range(FULL_FRAMES + 2):
        fade.concealed(ones())
    g = fade.gain
    assert 0 < g < 1
    back = fade.decoded(ones()).copy()
    assert back[0] == pytest.approx(g, abs=0.01)
    assert np.all(np.diff(back[:FADE_IN_SAMPLES]) >= 0)
    assert np.array_equal(back[FADE_IN_SAMPLES:], np.ones(FRAME_SAMPLES - FADE_IN_SAMPLES))
    assert fade.gain == 1.0 and fade.run == 0
    assert np.array_equal(fade.decoded(ones()), ones())  # and then untouched


def test_audio_after_silence_fades_in_from_zero() -> None:
    fade = Fade()
    fade.silent()
    first = fade.decoded(ones()).copy()
    assert first[0] < 0.01 and first[FADE_IN_SAMPLES - 1] == 1.0


def test_a_concealment_after_silence_stays_silent() -> None:
    fade = Fade()
    fade.silent()
    assert not fade.concealed(ones()).any()


def test_ramp_out_ends_at_zero() -> None:
    tail = ramp_out(np.ones(300, dtype=np.float32))
    assert tail[0] == 1.0 and tail[-1] == 0.0 and np.all(np.diff(tail) <= 0)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Fade(fade_frames=0)
    with pytest.raises(ValueError):
        Fade(fade_in_samples=FRAME_SAMPLES + 1)
