"""Time-stretching of decoded speech by whole pitch periods (WSOLA-style), sans-I/O.

The adaptive jitter buffer changes its depth during continuous speech by playing
the decoded audio a little faster or slower, never by dropping or repeating packets:

* :func:`accelerate` removes one pitch period: the period ``x[a:a+L]`` is
  cross-faded into the next one ``x[a+L:a+2L]``, so ``L`` samples are gone;
* :func:`expand` inserts one: ``x[a+L:a+2L]`` is cross-faded back into
  ``x[a:a+L]``, which then plays again, so ``L`` samples are added.

Either join is continuous (the fade starts on the sample that would have come
next and ends on one that is followed by its own successor), and in voiced speech
the two periods are nearly identical, so the listener hears a slightly shorter or
longer vowel, not a click. The period ``L`` is the lag that maximises the
normalised correlation between the two segments, searched on a 12 kHz copy of the
signal and refined at 48 kHz (the decimation is what NetEQ does too, for cost).
Where the correlation is low (a consonant, a transition) nothing is done unless
the segment is quiet: there any lag is inaudible and the longest one allowed is used.

Unless the buffer is far off its aim, a change waits for a pause (:class:`Pause`): the
audio has stayed below ``QUIET_RMS`` for ``PAUSE_SAMPLES`` before the cut. A low spot
between two words is not one: in an utterance, even a 10 ms cut where the level is
-43 dBFS costs 1.2 of wideband PESQ (4.64 -> 3.47 on bench/data's speech), as it moves
the words after it against the words before; in a pause between phrases the same cut
costs nothing (4.64), nor does it to a listener.

:class:`StretchBudget` bounds how much audio is changed: a few percent of speech
per second, much more where it is quiet (in pauses and between talk spurts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.media.audio_format import SAMPLE_RATE

MIN_LAG = SAMPLE_RATE * 25 // 10_000  # 2.5 ms: a 400 Hz voice's period
MAX_LAG = SAMPLE_RATE * 15 // 1000  # 15 ms: a 67 Hz voice's period
DECIMATE = 4  # the coarse search runs at 12 kHz
CORRELATION = 0.9  # the two periods must be this alike (NetEQ uses 0.9 too)
QUIET_RMS = 0.003  # -50 dBFS: silence, or a room's noise suppressed; cut anywhere
PAUSE_SAMPLES = SAMPLE_RATE * 60 // 1000  # that quiet for 60 ms before the cut: a pause
SPEECH_SHARE = 0.05  # at most this share of speech is removed or inserted
QUIET_SHARE = 0.5  # and this share of quiet audio


@dataclass(frozen=True, slots=True)
class Period:
    lag: int  # samples
    correlation: float  # 1.0 for an identical repeat
    quiet: bool  # the segment is too quiet for the correlation to matter


def quiet(x: np.ndarray) -> bool:
    """Whether ``x`` (not empty) is below ``QUIET_RMS``."""
    return float(np.dot(x, x)) < QUIET_RMS * QUIET_RMS * len(x)


def find_period(x: np.ndarray, max_lag: int = MAX_LAG) -> Period | None:
    """The best pitch period ``L`` with ``2 * L <= len(x)``, or None if ``x`` is too short."""
    hi = min(max_lag, len(x) // 2)
    if hi < MIN_LAG:
        return None
    seg = x[: 2 * hi].astype(np.float64)
    if quiet(seg):
        return Period(hi, 0.0, True)
    # Coarse: one window at the start against every shift of it, all lags at once.
    coarse = seg[: len(seg) // DECIMATE * DECIMATE].reshape(-1, DECIMATE).mean(axis=1)
    width = hi // DECIMATE
    head = coarse[:width]
    dots = np.correlate(coarse, head, mode="valid")  # dots[k] = <head, coarse[k:k+width]>
    power = np.concatenate([[0.0], np.cumsum(coarse * coarse)])
    energy = (power[width : width + len(dots)] - power[: len(dots)]) * float(np.dot(head, head))
    ncc = np.where(energy > 0, dots / np.sqrt(np.maximum(energy, 1e-30)), 0.0)
    first = max(1, MIN_LAG // DECIMATE)
    best = first + int(np.argmax(ncc[first:]))
    # Fine: the exact measure (period against the next period) around it, at 48 kHz.
    lo_fine = max(MIN_LAG, best * DECIMATE - DECIMATE)
    hi_fine = min(hi, best * DECIMATE + DECIMATE)
    fine = max(range(lo_fine, hi_fine + 1), key=lambda lag: _correlation(seg, lag))
    return Period(fine, _correlation(seg, fine), False)


def _correlation(x: np.ndarray, lag: int) -> float:
    a, b = x[:lag], x[lag : 2 * lag]
    energy = float(np.dot(a, a) * np.dot(b, b))
    if energy <= 0.0:
        return 0.0
    return float(np.dot(a, b)) / float(np.sqrt(energy))


def _fade(lag: int) -> np.ndarray:
    # Raised cosine from 1 to 0 over the period: smooth at both ends of the join.
    return (0.5 + 0.5 * np.cos(np.pi * (np.arange(lag) + 0.5) / lag)).astype(np.float32)


def usable(period: Period | None) -> bool:
    return period is not None and (period.quiet or period.correlation >= CORRELATION)


def accelerate(x: np.ndarray, period: Period) -> np.ndarray:
    """``x`` shortened by one period (``period.lag`` samples), from its start."""
    lag = period.lag
    down = _fade(lag)
    joined = x[:lag] * down + x[lag : 2 * lag] * (1.0 - down)
    return np.concatenate([joined, x[2 * lag :]]).astype(np.float32)


def expand(x: np.ndarray, period: Period) -> np.ndarray:
    """``x`` lengthened by one period (``period.lag`` samples), from its start."""
    lag = period.lag
    down = _fade(lag)
    joined = x[lag : 2 * lag] * down + x[:lag] * (1.0 - down)
    return np.concatenate([x[:lag], joined, x[lag:]]).astype(np.float32)


class Pause:
    """Whether the audio heard so far ends in a pause: ``heard(pcm)`` with each decoded
    frame, in order; ``before(n)``: the audio was quiet for ``PAUSE_SAMPLES`` before its
    last ``n`` samples, and quiet through them."""

    def __init__(self) -> None:
        self.run = 0  # samples: the run of quiet audio that ends with the last heard

    def heard(self, pcm: np.ndarray) -> None:
        self.run = self.run + len(pcm) if quiet(pcm) else 0

    def before(self, n: int) -> bool:
        return self.run >= n + PAUSE_SAMPLES


class StretchBudget:
    """How many samples may be removed or inserted now: earned as audio plays.

    Every played sample earns ``SPEECH_SHARE`` of a sample of allowance (up to
    ``cap``); a change in quiet audio costs a tenth of one in speech, so quiet
    passages absorb most of the adaptation.
    """

    def __init__(self, cap: int = MAX_LAG * 2) -> None:
        self.cap = cap
        self.tokens = 0.0

    def earn(self, samples: int) -> None:
        self.tokens = min(float(self.cap), self.tokens + SPEECH_SHARE * samples)

    def allows(self, period: Period) -> bool:
        return self.tokens >= self._cost(period)

    def spend(self, period: Period) -> None:
        self.tokens -= self._cost(period)

    @staticmethod
    def _cost(period: Period) -> float:
        return period.lag * (SPEECH_SHARE / QUIET_SHARE if period.quiet else 1.0)


def stretch(
    x: np.ndarray, want: int, budget: StretchBudget, *, quiet_only: bool = False
) -> tuple[np.ndarray, int]:
    """Apply at most one period of change towards ``want`` samples (+ longer, - shorter);
    with ``quiet_only``, only if ``x`` is quiet (the caller knows whether it is a pause).

    Returns the new audio and the change made (0 when the signal or budget does not
    allow one). Shortening removes at most ``-want`` samples, so it never overshoots
    the target; lengthening may add up to one longest period more than asked, which
    only errs on the safe side.
    """
    if want == 0 or (want < 0 and -want < MIN_LAG):
        return x, 0
    period = find_period(x, max_lag=MAX_LAG if want > 0 else min(MAX_LAG, -want))
    if period is None or not usable(period) or not budget.allows(period):
        return x, 0
    if quiet_only and not period.quiet:
        return x, 0
    budget.spend(period)
    if want < 0:
        return accelerate(x, period), -period.lag
    return expand(x, period), period.lag
