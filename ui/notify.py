"""Optional short sounds when someone joins or leaves your channel, or writes in the chat.

The sounds are made here (a few sine notes) and played by Qt Multimedia on the
system's default output, apart from the client's own output device, so they work
whatever the client plays to. Off unless the user turns them on (remembered).
"""

from __future__ import annotations

import tempfile
import wave
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QObject, QSettings, QUrl
from PyQt6.QtMultimedia import QSoundEffect

KEY = "notify/sounds"
RATE = 48000
JOIN, LEAVE, MESSAGE = "join", "leave", "message"
NOTES = {  # (Hz, seconds) per note: rising for a join, falling for a leave, one blip for chat
    JOIN: ((660.0, 0.07), (880.0, 0.09)),
    LEAVE: ((880.0, 0.07), (587.0, 0.09)),
    MESSAGE: ((1320.0, 0.05),),
}
VOLUME = 0.35


def tone(notes: tuple[tuple[float, float], ...]) -> np.ndarray:
    """The notes, each faded in and out (no clicks), as 16-bit samples."""
    parts = []
    for hz, secs in notes:
        t = np.arange(int(RATE * secs)) / RATE
        fade = np.minimum(1.0, np.minimum(t, secs - t) / 0.008)
        parts.append(np.sin(2 * np.pi * hz * t) * fade)
    return (np.concatenate(parts) * 0.6 * 32767).astype("<i2")


class Sounds(QObject):
    def __init__(self, settings: QSettings, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.enabled = str(settings.value(KEY, "false")).lower() == "true"
        self.played: list[str] = []  # what was asked to play, newest last (kept short)
        self._dir = Path(tempfile.mkdtemp(prefix="vc-sounds-"))
        self._effects: dict[str, QSoundEffect] = {}
        for kind, notes in NOTES.items():
            path = self._dir / f"{kind}.wav"
            with wave.open(str(path), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE)
                w.writeframes(tone(notes).tobytes())
            effect = QSoundEffect(self)
            effect.setSource(QUrl.fromLocalFile(str(path)))
            effect.setVolume(VOLUME)
            self._effects[kind] = effect

    def set_enabled(self, on: bool) -> None:
        self.enabled = on
        self.settings.setValue(KEY, "true" if on else "false")

    def play(self, kind: str) -> None:
        if not self.enabled or kind not in self._effects:
            return
        self.played.append(kind)
        del self.played[:-20]
        self._effects[kind].play()

    def close(self) -> None:
        """Stop and remove the sound files (idempotent; nothing plays after it)."""
        for effect in self._effects.values():
            effect.stop()
        self._effects.clear()
        if self._dir.exists():
            for path in self._dir.glob("*.wav"):
                path.unlink(missing_ok=True)
            self._dir.rmdir()
