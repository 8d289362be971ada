"""Generated test signals: a tone and a speech-like voiced signal, 48 kHz mono float32.

The speech-like signal stands in for a voice where no recording may be shipped:
a glottal-pulse-like harmonic series with a wandering pitch (90-220 Hz),
three moving formants, syllable-rate amplitude envelopes and short pauses.
It is deterministic for a given seed, so a test or benchmark can regenerate
exactly what was sent and compare it with what was heard.
"""

from __future__ import annotations

import numpy as np

from pipeline.media.audio_format import FRAME_SAMPLES, SAMPLE_RATE


def tone(seconds: float, freq: float = 1000.0, amplitude: float = 0.5) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def speech_like(seconds: float, seed: int = 1, amplitude: float = 0.5) -> np.ndarray:
    """A voiced, speech-like signal with pitch and formant movement and pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    # Pitch: slow wander plus a per-syllable contour.
    syllable_rate = 4.0
    f0 = (
        140
        + 50 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6))
        + 20 * np.sin(2 * np.pi * syllable_rate * t)
    )
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    # Harmonics with a -12 dB/octave-like glottal tilt, shaped by three moving formants.
    out = np.zeros(n)
    formants = [
        (500 + 300 * np.sin(2 * np.pi * 1.1 * t), 90.0),
        (1500 + 500 * np.sin(2 * np.pi * 0.7 * t + 1), 120.0),
        (2500 + 200 * np.sin(2 * np.pi * 0.5 * t + 2), 160.0),
    ]
    for k in range(1, 40):
        fk = k * f0
        gain = 1.0 / k**1.2
        shaped = sum(np.exp(-0.5 * ((fk - fc) / bw) ** 2) for fc, bw in formants) + 0.05
        out += gain * shaped * np.sin(k * phase)
    out += 0.02 * rng.standard_normal(n)  # breath noise
    # Syllable envelope with pauses: on for ~70 % of 250 ms cycles, silent gaps every ~2 s.
    env = np.clip(np.sin(np.pi * (t * syllable_rate % 1.0)) * 1.4, 0, 1) ** 0.7
    pauses = (np.sin(2 * np.pi * 0.45 * t + rng.uniform(0, 6)) > -0.8).astype(np.float64)
    out *= env * pauses
    peak = np.max(np.abs(out)) or 1.0
    return (amplitude * out / peak).astype(np.float32)


def frames(signal: np.ndarray) -> np.ndarray:
    """The signal cut into whole 960-sample frames (a trailing partial frame is zero-padded)."""
    n = -(-len(signal) // FRAME_SAMPLES) * FRAME_SAMPLES
    padded = np.zeros(n, dtype=np.float32)
    padded[: len(signal)] = signal
    return padded.reshape(-1, FRAME_SAMPLES)


def align(sent: np.ndarray, heard: np.ndarray, max_lag: int) -> tuple[int, float]:
    """The lag (samples) at which ``heard`` best matches ``sent``, and the correlation there.

    Uses an FFT cross-correlation over lags 0..max_lag; the correlation is the
    Pearson coefficient of the overlapping parts at the best lag.
    """
    n = len(sent) + len(heard)
    size = 1 << (n - 1).bit_length()
    spec = np.fft.rfft(heard, size) * np.conj(np.fft.rfft(sent, size))
    xc = np.fft.irfft(spec, size)[: max_lag + 1]
    lag = int(np.argmax(xc))
    m = min(len(sent), len(heard) - lag)
    if m <= 1:
        return lag, 0.0
    a, b = sent[:m].astype(np.float64), heard[lag : lag + m].astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return lag, 0.0
    return lag, float(np.corrcoef(a, b)[0, 1])


def align_windows(
    sent: np.ndarray, heard: np.ndarray, window: int = SAMPLE_RATE, slack: int = SAMPLE_RATE // 10
) -> float:
    """The median correlation of ``sent``'s one-second windows, each aligned on its own.

    A jitter buffer that grows or shrinks by a frame mid-call shifts everything after it
    by 20 ms, which a single lag (:func:`align`) scores as a mismatch. Each window here may
    sit up to ``slack`` samples either side of the best overall lag.
    """
    lag, _ = align(sent, heard, max_lag=max(0, len(heard) - window))
    scores = []
    for start in range(0, len(sent) - window + 1, window):
        lo = max(0, start + lag - slack)
        part = heard[lo : start + lag + slack + window]
        if len(part) < window:
            continue
        _l, corr = align(sent[start : start + window], part, max_lag=len(part) - window)
        scores.append(corr)
    return float(np.median(scores)) if scores else 0.0
