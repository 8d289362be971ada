"""The audio settings' test, sans-I/O: a short tone to the output, and the microphone
played back here for a few seconds, with nothing sent to the relay.

Through the client's own processes, so what is tested is what a call uses:

* **tone**: the decode stage adds :class:`TestTone` to the frames it mixes into the
  playback ring, so it goes out through the chosen output (device or file) exactly
  as voice does, deafened or not (the user asked for it).
* **loopback**: the encode stage cleans (noise suppression, gain control) and encodes
  every captured frame, talk mode and mute aside, and writes it to the network ring
  flagged :data:`LOOPBACK_FLAG` instead of sending it; the network stage hands flagged
  bodies straight to its own receive side as speaker :data:`LOOPBACK_SPEAKER`, so they
  are decoded, buffered and played as any speaker is. The flag is checked where voice
  leaves the client, so a looped-back frame can never reach the relay; and the voice
  stream's sequence numbers count only what is sent, so the listeners see a pause,
  not a loss.

Each test ends by itself after its ``seconds`` (:class:`TestClock`): a window that goes
away mid-test leaves nothing running.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.media.audio_format import FRAME_SAMPLES, SAMPLE_RATE

TONE = "tone"
LOOPBACK = "loopback"
STOP = "stop"
KINDS = (TONE, LOOPBACK, STOP)
TONE_HZ = 440.0
TONE_LEVEL = 0.25  # peak amplitude, -12 dBFS: clearly heard, never clipped by the mix
TONE_SECONDS = 1.0  # what the settings' "Play test tone" asks for
LOOPBACK_SECONDS = 5.0  # what the settings' "Hear my microphone" asks for
FADE_SECONDS = 0.01  # in and out: a tone that starts at full level clicks
LOOPBACK_SPEAKER = 0  # the speaker id looped-back voice is played as: never a session's
LOOPBACK_FLAG = 1  # on a network ring slot: play it here, never send it


class AudioTestError(ValueError):
    """An audio test command that names no test."""


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise AudioTestError(f"no audio test {kind[:20]!r}; one of {', '.join(KINDS)}")
    return kind


class TestClock:
    """When a test that was started ends: ``start(now, seconds)``, ``active(now)``."""

    __test__ = False  # not a pytest class, whatever its name says

    def __init__(self) -> None:
        self.until = -math.inf

    def start(self, now: float, seconds: float) -> None:
        self.until = now + max(0.0, seconds)

    def stop(self) -> None:
        self.until = -math.inf

    def active(self, now: float) -> bool:
        return now < self.until


class TestTone:
    """A sine of ``hz`` at ``level``, faded in and out, added to 960-sample frames."""

    __test__ = False

    def __init__(self, hz: float = TONE_HZ, level: float = TONE_LEVEL) -> None:
        self.hz, self.level = hz, level
        self._tone = np.zeros(0, dtype=np.float32)
        self._pos = 0

    @property
    def playing(self) -> bool:
        return self._pos < len(self._tone)

    def start(self, seconds: float) -> None:
        """Play ``seconds`` of the tone (whole frames) from the next frame on."""
        frames = max(1, round(seconds * SAMPLE_RATE / FRAME_SAMPLES)) if seconds > 0 else 0
        n = frames * FRAME_SAMPLES
        t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
        tone = self.level * np.sin(2 * math.pi * self.hz * t)
        fade = min(n // 2, round(FADE_SECONDS * SAMPLE_RATE))
        if fade:
            ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
            tone[:fade] *= ramp
            tone[n - fade :] *= ramp[::-1]
        self._tone = tone.astype(np.float32)
        self._pos = 0

    def stop(self) -> None:
        self._pos = len(self._tone)

    def add_to(self, out: np.ndarray) -> bool:
        """Add the tone's next frame into ``out`` in place (kept within [-1, 1]); False
        when it has ended, and ``out`` is left as it was."""
        if not self.playing:
            return False
        part = self._tone[self._pos : self._pos + len(out)]
        np.add(out[: len(part)], part, out=out[: len(part)])
        np.clip(out, -1.0, 1.0, out=out)
        self._pos += len(part)
        return True
