"""pipeline/core/timestretch.py: pitch periods found, audio shortened and lengthened cleanly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import timestretch as ts
from pipeline.media.audio_format import SAMPLE_RATE


def voiced(f0: float, n: int = 1920, amplitude: float = 0.3) -> np.ndarray:
    """A vowel-like tone: a fundamental and two harmonics."""
    t = np.arange(n) / SAMPLE_RATE
    x = sum(amplitude / k * np.sin(2 * np.pi * k * f0 * t + k) for k in (1, 2, 3))
    return np.asarray(x, dtype=np.float32)


def max_step(x: np.ndarray) -> float:
    return float(np.max(np.abs(np.diff(x))))


@pytest.mark.parametrize("f0", [85.0, 140.0, 230.0])
def test_the_pitch_period_is_found(f0: float) -> None:
    period = ts.find_period(voiced(f0))
    assert period is not None and not period.quiet
    assert abs(period.lag - SAMPLE_RATE / f0) <= 1.5
    assert period.correlation > 0.99


def test_noise_has_no_usable_period_and_is_left_alone() -> None:
    noise = np.random.default_rng(3).normal(0, 0.1, 1920).astype(np.float32)
    assert not ts.usable(ts.find_period(noise))
    budget = ts.StretchBudget()
    budget.tokens = 1e9
    out, change = ts.stretch(noise, -480, budget)
    assert change == 0 and out is noise


def test_quiet_audio_can_be_cut_anywhere_and_only_it_with_quiet_only() -> None:
    quiet = voiced(140.0, amplitude=0.001)
    period = ts.find_period(quiet)
    assert period is not None and period.quiet and ts.usable(period)
    budget = ts.StretchBudget()
    budget.tokens = 1e9
    out, change = ts.stretch(quiet, -300, budget, quiet_only=True)
    assert change == -300 and len(out) == len(quiet) - 300  # exactly what was asked
    loud = voiced(140.0)
    assert ts.stretch(loud, -480, budget, quiet_only=True)[1] == 0


@pytest.mark.parametrize("f0", [100.0, 140.0, 200.0])
def test_accelerate_and_expand_change_the_length_by_one_period_without_a_click(f0: float) -> None:
    x = voiced(f0)
    period = ts.find_period(x)
    assert period is not None
    shorter, longer = ts.accelerate(x, period), ts.expand(x, period)
    assert len(shorter) == len(x) - period.lag
    assert len(longer) == len(x) + period.lag
    # No click: no step between samples larger than the tone's own steepest one (a hard
    # splice of two unaligned periods would jump by up to twice the amplitude).
    assert max_step(shorter) <= 1.05 * max_step(x)
    assert max_step(longer) <= 1.05 * max_step(x)
    # And what follows the join is the original signal, sample for sample.
    np.testing.assert_array_equal(shorter[period.lag :], x[2 * period.lag :])
    np.testing.assert_array_equal(longer[2 * period.lag :], x[period.lag :])


def test_the_join_continues_the_audio_at_both_ends() -> None:
    """The join starts on the sample that would have come next and ends on one followed
    by its own successor, whatever the signal."""
    x = np.random.default_rng(5).normal(0, 0.2, 1920).astype(np.float32)
    period = ts.Period(lag=300, correlation=0.0, quiet=True)
    shorter = ts.accelerate(x, period)
    assert abs(shorter[0] - x[0]) < 0.01 * abs(x[0]) + 1e-3
    assert abs(shorter[299] - x[599]) < 0.05
    longer = ts.expand(x, period)
    np.testing.assert_array_equal(longer[:300], x[:300])
    assert abs(longer[300] - x[300]) < 0.05 and abs(longer[599] - x[299]) < 0.05


def test_the_budget_keeps_speech_changes_to_a_few_percent() -> None:
    budget = ts.StretchBudget()
    x = voiced(140.0)
    changed = played = 0
    for _ in range(500):  # 10 s of 20 ms frames, each asking for a big change
        budget.earn(960)
        played += 960
        _out, change = ts.stretch(x, -720, budget)
        changed += abs(change)
    assert 0 < changed <= ts.SPEECH_SHARE * played + ts.MAX_LAG


def test_quiet_changes_cost_less_of_the_budget() -> None:
    budget = ts.StretchBudget()
    budget.earn(960 * 20)  # 0.4 s of speech earns ~19 ms of change
    quiet = voiced(140.0, amplitude=0.001)
    total = 0
    for _ in range(20):
        total += -ts.stretch(quiet, -480, budget)[1]
    assert total > ts.SPEECH_SHARE * 960 * 20 * 2  # far more than the same budget in speech


@settings(max_examples=60, deadline=None)
@given(
    f0=st.floats(70.0, 400.0),
    n=st.integers(0, 2880),
    want=st.integers(-2000, 2000),
    amplitude=st.floats(0.0, 1.0),
)
def test_stretch_never_breaks_its_contract(f0: float, n: int, want: int, amplitude: float) -> None:
    x = voiced(f0, n, amplitude)
    budget = ts.StretchBudget()
    budget.tokens = 1e9
    out, change = ts.stretch(x, want, budget)
    assert len(out) == len(x) + change
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
    if want < 0:
        assert -want >= -change >= 0  # never shortens by more than asked
    elif want > 0:
        assert 0 <= change <= ts.MAX_LAG
    else:
        assert change == 0
    assert float(np.max(np.abs(out), initial=0.0)) <= float(np.max(np.abs(x), initial=0.0)) + 1e-6


def test_a_pause_is_quiet_audio_that_has_lasted_not_a_low_spot_between_words() -> None:
    pause = ts.Pause()
    frame = ts.PAUSE_SAMPLES // 3  # 20 ms
    pause.heard(voiced(140.0))
    assert not pause.before(0)
    pause.heard(voiced(140.0, n=frame, amplitude=0.005))  # a dip between words: -46 dBFS
    assert not pause.before(frame)  # quiet, but not for long enough before it
    assert not pause.before(0)  # and not quiet: the dip is above -50 dBFS
    pause.heard(np.zeros(3 * frame, np.float32))  # silence: 60 ms of it
    assert pause.before(0) and not pause.before(frame)
    pause.heard(np.zeros(frame, np.float32))  # 80 ms: its last 20 ms have 60 ms before them
    assert pause.before(frame) and not pause.before(2 * frame)
    pause.heard(voiced(140.0, n=frame))  # speech again
    assert not pause.before(0)
    assert ts.QUIET_RMS < 0.005  # -50 dBFS: a -46 dBFS spot in an utterance is not quiet
