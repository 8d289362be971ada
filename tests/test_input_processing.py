"""pipeline/media/input_processing.py: WebRTC noise suppression and gain control, on
synthetic signals whose answer is known (stationary noise goes down, speech stays,
quiet speech comes up)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.media import synthetic
from pipeline.media.audio_format import FRAME_SAMPLES
from pipeline.media.input_processing import InputProcessor


def db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12))


def run(p: InputProcessor, x: np.ndarray) -> np.ndarray:
    return np.concatenate([p.process(f) for f in synthetic.frames(x)])


def test_stationary_noise_is_suppressed() -> None:
    rng = np.random.default_rng(3)
    noise = (0.01 * rng.standard_normal(48_000 * 3)).astype(np.float32)  # -40 dBFS
    out = run(InputProcessor(gain_control=False), noise)
    assert db(out[48_000:]) < db(noise) - 6  # once the suppressor has learnt it


def test_speech_passes_and_keeps_its_shape() -> None:
    speech = synthetic.speech_like(3.0, seed=5, amplitude=0.3)
    out = run(InputProcessor(gain_control=False), speech)
    lag = max(range(0, 700, 2), key=lambda k: float(np.dot(speech[:-1000], out[k : k - 1000])))
    a, b = speech[24_000:-1000], out[24_000 + lag : len(out) - 1000 + lag]
    assert float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)) > 0.9
    assert abs(db(b) - db(a)) < 3


def test_gain_control_brings_quiet_speech_up() -> None:
    quiet = synthetic.speech_like(6.0, seed=6, amplitude=0.01)  # about -50 dBFS
    p = InputProcessor(noise_suppression=False)
    out = run(p, quiet)
    assert db(out[-48_000:]) > db(quiet[-48_000:]) + 10
    assert p.gain_db > 10
    assert np.max(np.abs(out)) <= 1.0


def test_off_is_a_plain_copy_and_a_bad_frame_is_refused() -> None:
    p = InputProcessor(noise_suppression=False, gain_control=False)
    f = synthetic.tone(0.02)
    assert np.array_equal(p.process(f), f)
    assert p.gain_db == 0.0
    with pytest.raises(ValueError, match=f"{FRAME_SAMPLES} samples"):
        p.process(np.zeros(100, dtype=np.float32))


def test_noise_suppression_switches_at_run_time_and_gain_control_stays() -> None:
    rng = np.random.default_rng(4)
    noise = (0.03 * rng.standard_normal(48_000 * 6)).astype(np.float32)  # -30 dBFS, white
    p = InputProcessor()
    assert p.noise_suppression
    on = run(p, noise[: 48_000 * 2])
    p.noise_suppression = False
    assert not p.noise_suppression
    off = run(p, noise[48_000 * 2 : 48_000 * 4])
    p.noise_suppression = True  # a fresh suppressor: it learns the noise again
    again = run(p, noise[48_000 * 4 :])
    assert db(off[48_000:]) > db(on[48_000:]) + 10  # measured: -26 against -44 dBFS
    assert db(again[48_000:]) < db(off[48_000:]) - 10
