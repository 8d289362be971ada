"""The headless client's talk keys: a key typed in the terminal -> talk commands.

A terminal reports key presses but never releases, so push-to-talk here is a toggle:
space turns the key down (switching to push-to-talk mode if another mode is on) and
up again. ``v``, ``c`` and ``p`` switch to voice activation, continuous and
push-to-talk. :class:`TalkKeys` is sans-I/O (keys in, commands out) and also re-sends
what the encode stage's stats show it missed (a bus command can be lost, and a lost
key-up must not leave the microphone open). :class:`RawKeys` is the thin adapter:
the terminal in cbreak mode, read without blocking, restored on every way out.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import tty
from types import TracebackType
from typing import IO, Any

from pipeline.core.talk import CONTINUOUS, PTT, VAD, check_mode
from pipeline.ipc import events as ev

KEYS_HELP = "keys: space = push-to-talk down/up, v = voice activation, c = continuous, p = ptt"
_MODE_KEYS = {"v": VAD, "c": CONTINUOUS, "p": PTT}


class TalkKeys:
    """The talk mode and the push-to-talk key as the user set them from the keyboard."""

    def __init__(self, mode: str) -> None:
        self.mode = check_mode(mode)
        self.pressed = False

    def key(self, ch: str) -> list[ev.Event]:
        """The commands one key press means (none for other keys)."""
        out: list[ev.Event] = []
        if ch == " ":
            if self.mode != PTT:
                self.mode = PTT
                out.append(ev.TalkModeCmd(PTT))
            self.pressed = not self.pressed
            out.append(ev.PushToTalkCmd(self.pressed))
        elif ch.lower() in _MODE_KEYS and _MODE_KEYS[ch.lower()] != self.mode:
            self.mode = _MODE_KEYS[ch.lower()]
            self.pressed = False
            out += [ev.TalkModeCmd(self.mode), ev.PushToTalkCmd(False)]
        return out

    def corrections(self, stats: ev.EncodeStats) -> list[ev.Event]:
        """The commands to send again because the encode stage reports something else."""
        out: list[ev.Event] = []
        if stats.talk_mode != self.mode:
            out.append(ev.TalkModeCmd(self.mode))
        if stats.ptt_pressed != self.pressed:
            out.append(ev.PushToTalkCmd(self.pressed))
        return out

    def describe(self) -> str:
        if self.mode == PTT:
            return f"push-to-talk, key {'down: talking' if self.pressed else 'up'}"
        return {VAD: "voice activation", CONTINUOUS: "continuous"}[self.mode]


class RawKeys:
    """Single key presses from the terminal, without echo or Enter; a no-op elsewhere."""

    def __init__(self, stream: IO[Any] | None = None) -> None:
        self._stream = sys.stdin if stream is None else stream
        self._fd: int | None = None
        self._saved: list[Any] | None = None

    def __enter__(self) -> RawKeys:
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            return self
        if os.isatty(fd):
            self._fd, self._saved = fd, termios.tcgetattr(fd)
            tty.setcbreak(fd)
        return self

    @property
    def active(self) -> bool:
        return self._fd is not None

    def read(self) -> str:
        """The keys typed since the last call ("" if none), never blocking."""
        if self._fd is None:
            return ""
        keys = ""
        while select.select([self._fd], [], [], 0)[0]:
            data = os.read(self._fd, 64)
            if not data:
                break
            keys += data.decode("utf-8", "replace")
        return keys

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None and self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
        self._fd = self._saved = None
