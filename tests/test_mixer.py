"""pipeline/core/mixer.py: sums, the soft clip's shape, and no allocation per frame."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.core.mixer import KNEE, Mixer
from pipeline.media.audio_format import FRAME_SAMPLES


def const(v: float) -> np.ndarray:
    return np.full(FRAME_SAMPLES, v, dtype=np.float32)


def test_no_frames_is_silence() -> None:
    assert not Mixer().mix([]).any()


def test_below_the_knee_is_an_exact_sum() -> None:
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(FRAME_SAMPLES) * 0.1).astype(np.float32)
    b = (rng.standard_normal(FRAME_SAMPLES) * 0.1).astype(np.float32)
    a, b = np.clip(a, -0.4, 0.4), np.clip(b, -0.4, 0.4)
    assert np.array_equal(Mixer().mix([a, b]), a + b)


def test_one_speaker_passes_through_and_inputs_are_untouched() -> None:
    a = const(0.3)
    out = Mixer().mix([a])
    assert np.array_equal(out, a) and out is not a
    assert np.all(a == np.float32(0.3))


def test_soft_clip_is_continuous_monotonic_and_below_full_scale() -> None:
    m = Mixer()
    xs = np.linspace(-8, 8, 4001, dtype=np.float32)
    ys = [float(m.mix([const(float(x))])[0]) for x in xs]
    assert all(abs(y) <= 1.0 for y in ys)
    assert all(b >= a for a, b in itertools.pairwise(ys))
    # continuous at the knee with slope about 1
    just_over = float(m.mix([const(KNEE + 1e-3)])[0])
    assert just_over == pytest.approx(KNEE + 1e-3, abs=1e-5)
    assert float(m.mix([const(-3.0)])[0]) == pytest.approx(-float(m.mix([const(3.0)])[0]))


def test_many_loud_speakers_saturate_gently() -> None:
    out = Mixer().mix([const(0.8)] * 5)
    assert np.all(out > 0.99) and np.all(out <= 1.0)


def test_writes_into_the_callers_buffer() -> None:
    dest = np.empty(FRAME_SAMPLES, dtype=np.float32)
    out = Mixer().mix([const(0.1), const(0.2)], out=dest)
    assert out is dest and np.allclose(dest, 0.3)
    with pytest.raises(ValueError):
        Mixer().mix([const(0.1)], out=np.empty(10, dtype=np.float32))
    with pytest.raises(ValueError):
        Mixer().mix([np.zeros(10, dtype=np.float32)])


def test_mix_allocates_no_arrays_per_frame() -> None:
    m = Mixer()
    frames = [const(0.6), const(0.5), const(-0.2)]
    dest = np.empty(FRAME_SAMPLES, dtype=np.float32)
    m.mix(frames, out=dest)  # warm up
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(200):
            m.mix(frames, out=dest)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename") if s.size_diff > 0)
    assert grown < FRAME_SAMPLES * 4  # not even one frame's worth over 200 calls


@settings(max_examples=200)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(0, 6), st.just(FRAME_SAMPLES)),
        elements=st.floats(-4, 4, width=32),
    )
)
def test_any_mix_is_bounded(stack: np.ndarray) -> None:
    out = Mixer().mix(list(stack))
    assert np.all(np.abs(out) <= 1.0)
    assert np.all(np.isfinite(out))
