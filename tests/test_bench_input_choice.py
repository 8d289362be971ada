"""bench/input_choice.py: its signals and one small measurement (smoke test; the full run
is `python -m bench.input_choice`)."""

from __future__ import annotations

import numpy as np

from bench import input_choice
from pipeline.media import synthetic


def test_noises_are_unit_rms_and_candidates_say_when_missing() -> None:
    for name, x in input_choice.noises(48_000).items():
        assert abs(float(np.sqrt(np.mean(x * x))) - 1.0) < 1e-3, name
    makers = input_choice.suppressors()
    assert {"none", "webrtc ns+agc (chosen)"} <= set(makers)
    frame = synthetic.frames(synthetic.tone(0.02))[0]
    none = makers["none"]()
    assert none is not None and none(frame) is frame
    assert "webrtcvad 3 (chosen)" in input_choice.detectors()


def test_the_gate_measurement_on_a_short_signal() -> None:
    speech = np.concatenate([np.zeros(24_000, np.float32), synthetic.speech_like(2.0, seed=3)])
    rows = input_choice.measure_gate(speech, quick=True)
    quiet = rows["onset 1, pre-roll 2, hold 12"]["pink -60 dBFS"]
    assert quiet["noise_datagrams_per_s"] == 0.0 and quiet["speech_frames_clipped"] == 0
