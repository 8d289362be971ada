"""Talk modes, sans-I/O: which captured frames a speaker sends (SPEC.md, "Talk spurts").

* ``continuous``: every frame (the microphone is always open);
* ``vad``: voice activation. A frame is sent when a voice activity detector finds
  speech in it, and for ``hold_frames`` after the last such frame, so word endings
  and the short pauses between words are not cut. The detector needs a frame or
  two to be sure of an onset (and ``onset_frames`` in a row are asked for, so a
  single click does not open the microphone), so the last ``preroll_frames``
  frames before it are kept and sent first: the first syllable is not clipped.
  A ``threshold`` (an RMS level, 0..1, as the level meter shows it; 0: none) asks the
  speech to be at least that loud too, so a quieter room's voices, typing or a fan
  the detector takes for speech stay off the wire (the desktop client sets it on
  its level meter, as Mumble's voice activation does);
* ``ptt``: push to talk, every frame while the key is down, nothing else.

What is not sent is silence on the wire: the encode stage numbers only what it
sends, so the pause costs a listener no sequence numbers (no loss), and it marks
the first packet of every run of sent frames (a talk spurt) so the listener's
jitter buffer starts it afresh. A muted frame is never sent and never kept for a
pre-roll: nothing said while muted can leak into the next spurt.

No clock and no I/O: frames in, frames out. The detector is any callable that
takes a 960-sample float32 frame and says whether it holds speech
(``pipeline/media/vad.py`` wraps WebRTC's); it is asked only in ``vad`` mode.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from pipeline.media.audio_format import FRAME_SAMPLES

CONTINUOUS = "continuous"
VAD = "vad"
PTT = "ptt"
MODES = (VAD, CONTINUOUS, PTT)

# Measured (bench/input_choice.py, "gate"): 240 ms keeps word endings and the gaps
# inside a phrase (Mumble holds 200 ms). One frame of pre-roll already sends every
# loud onset frame of speech after a pause; two keep a frame of margin for weak
# onsets (40 ms more delay at the start of a spurt, which the listener's playout
# takes back in the quiet pre-roll itself). Asking for two speech frames in a row
# before opening did not keep typing out (it stays open through clicks either way)
# and cost a frame of onset: one it is.
HOLD_FRAMES = 12
PREROLL_FRAMES = 2
ONSET_FRAMES = 1

Detector = Callable[[np.ndarray], bool]
T = TypeVar("T")


class TalkError(ValueError):
    """A talk mode that does not exist."""


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise TalkError(f"talk mode {mode!r}: expected one of {', '.join(MODES)}")
    return mode


@dataclass(slots=True)
class TalkCounts:
    sent: int = 0  # frames handed back to send (pre-roll included)
    unsent: int = 0  # frames the mode kept off the wire (silence, key up, muted)
    spurts: int = 0  # runs of sent frames begun
    speech: int = 0  # frames the detector called speech


class TalkGate(Generic[T]):
    """One speaker's talk mode: give it every captured frame, send what it hands back.

    ``T`` is whatever the caller needs to carry with a frame (its sequence number and
    capture time): a pre-rolled frame comes back with its own.
    """

    def __init__(
        self,
        detector: Detector,
        mode: str = VAD,
        *,
        hold_frames: int = HOLD_FRAMES,
        preroll_frames: int = PREROLL_FRAMES,
        onset_frames: int = ONSET_FRAMES,
    ) -> None:
        if hold_frames < 0 or preroll_frames < 0 or onset_frames < 1:
            raise ValueError("hold and pre-roll must be >= 0 frames, the onset >= 1")
        self.detector = detector
        self.hold_frames = hold_frames
        self.onset_frames = onset_frames
        self._mode = check_mode(mode)
        self.pressed = False  # the push-to-talk key
        self.threshold = 0.0  # voice activation: the RMS level speech must reach (0: any)
        self.counts = TalkCounts()
        self.started = False  # the frames the last push handed back begin a spurt
        self.ending = False  # and the last of them ends it (voice activation's hold ran out)
        self._last = False  # the frame being judged is the hold's last
        self._sending = False  # the last frame was sent
        self._hold = 0  # frames still to send after the last speech
        self._run = 0  # speech frames in a row
        # The pre-roll: copies of the last frames not sent, oldest first.
        self._pool = [np.zeros(FRAME_SAMPLES, dtype=np.float32) for _ in range(preroll_frames)]
        self._kept: deque[tuple[np.ndarray, T]] = deque()

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        self._mode = check_mode(mode)
        self._kept.clear()  # kept under another mode's rules
        self._hold = self._run = 0
        self._last = False

    @property
    def talking(self) -> bool:
        """The last frame was sent."""
        return self._sending

    def push(
        self, frame: np.ndarray, tag: T, probe: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, T]]:
        """The frames to send now, oldest first, each with its tag: none in silence;
        at the onset of a spurt the pre-roll, then this frame. ``probe`` is what the
        detector hears instead of ``frame`` (the microphone before processing: gain
        control raises room noise the detector would then take for speech). Both are
        only read while this call runs (a pre-roll keeps a copy), so they may be ring
        slot views; the arrays handed back are valid until the next call."""
        if self._mode == CONTINUOUS:
            send = True
        elif self._mode == PTT:
            send = self.pressed
        else:
            send = self._voice(frame if probe is None else probe)
        self.ending = False
        if not send:
            self._end()
            self._keep(frame, tag)
            return []
        out = list(self._kept) if not self._sending else []
        self.counts.unsent -= len(out)  # counted when kept; sent after all
        self._kept.clear()
        out.append((frame, tag))
        self.started = not self._sending
        if self.started:
            self.counts.spurts += 1
        self._sending = True
        self.counts.sent += len(out)
        if self._last:  # known now, before it is sent: the next frame starts afresh
            self._last = False
            self.ending = True
            self._sending = False
        return out

    def mute(self) -> None:
        """A frame captured while muted: not sent, not kept, and everything kept before
        forgotten; the next spurt starts afresh."""
        self._kept.clear()
        self._hold = self._run = 0
        self._last = False
        self._end()

    def _end(self) -> None:
        self.counts.unsent += 1
        self.started = False
        self._sending = False

    def loud(self, frame: np.ndarray) -> bool:
        """Whether ``frame``'s RMS level reaches the threshold (no copy is made)."""
        if self.threshold <= 0.0:
            return True
        energy = float(np.dot(frame, frame))
        return energy >= self.threshold * self.threshold * len(frame)

    def _voice(self, frame: np.ndarray) -> bool:
        speech = self.loud(frame) and bool(self.detector(frame))
        if speech:
            self.counts.speech += 1
            self._run += 1
        else:
            self._run = 0
        if self._run >= (1 if self._sending else self.onset_frames):
            self._hold = self.hold_frames
            return True
        if self._sending and self._hold > 0:
            self._hold -= 1
            self._last = self._hold == 0
            return True
        return False

    def _keep(self, frame: np.ndarray, tag: T) -> None:
        if self._mode != VAD or not self._pool:
            return
        if len(self._kept) == len(self._pool):
            self._kept.popleft()
        # The pool slot not held by any kept frame: there are len(pool) slots and at
        # most len(pool) - 1 kept now.
        used = {id(a) for a, _ in self._kept}
        buf = next(b for b in self._pool if id(b) not in used)
        buf[:] = frame
        self._kept.append((buf, tag))
