"""Every remote speaker's jitter buffer and decoder, mixed into one frame per tick. Sans-I/O.

The decode stage pushes received packets in and asks for one mixed frame
whenever the playback ring wants one; time is passed in (ns).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline.core.jitter import Conceal, Frame, JitterBuffer, Nothing, Recover
from pipeline.core.mixer import Mixer
from pipeline.ipc import events as ev
from pipeline.media.audio_format import FRAME_SAMPLES
from pipeline.media.opus import CodecError, OpusDecoder

SPEAKING_RMS = 0.01  # a frame louder than this counts as speech for the activity display
SPEAKING_HOLD_NS = 300_000_000  # and keeps the speaker lit this long
# Speakers heard at once: more than any channel talks over itself, and a bound on the
# decoders (and their memory) that a flood of speaker ids could make us allocate.
MAX_SPEAKERS = 64

# Flags of a mixed frame in the playback ring.
VOICE = 1  # at least one decoded packet is in it
CONCEALED = 2  # at least one speaker was concealed (PLC)
RECOVERED = 4  # at least one speaker was recovered from FEC


@dataclass(slots=True)
class Rendered:
    """What went into one mixed frame: the first decoded packet's seq, arrival and speaker.

    ``timestamp`` is when that packet arrived here (this machine's monotonic ns), so
    the playback stage can measure arrival to ear on one clock.
    """

    seq: int = 0
    timestamp: int = 0
    speaker: int = 0
    flags: int = 0
    waited_ns: list[int] = field(default_factory=list)  # jitter-buffer wait per decoded packet


@dataclass
class _Speaker:
    jitter: JitterBuffer
    decoder: OpusDecoder
    pushed_at: dict[int, int] = field(default_factory=dict)  # seq -> arrival, for jitter wait
    last_voice: int = 0
    decode_errors: int = 0
    # What was done for lost frames (the jitter buffer decides what could be done).
    recovered: int = 0
    concealed: int = 0
    silenced: int = 0


class Speakers:
    def __init__(
        self,
        watermark: int = 2,
        retire_after_ns: int = 2_000_000_000,
        jitter_factory: Callable[[], JitterBuffer] | None = None,
        *,
        fec: bool = True,
        plc: bool = True,
    ) -> None:
        """``fec``: rebuild a lost frame from the next packet's FEC when it is held.
        ``plc``: otherwise synthesise it (Opus PLC); with both off a lost frame is silence."""
        self._make_jitter = jitter_factory or (
            lambda: JitterBuffer(watermark=watermark, retire_after_ns=retire_after_ns)
        )
        self._speakers: dict[int, _Speaker] = {}
        self._mixer = Mixer(FRAME_SAMPLES)
        self._out = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        self._frames: list[np.ndarray] = []
        self.retired = 0
        self.refused = 0  # packets of a new speaker while MAX_SPEAKERS were being heard
        self.fec, self.plc = fec, plc

    def push(self, speaker: int, seq: int, timestamp: int, payload: bytes, now: int) -> None:
        """One received packet: ``timestamp`` is the speaker's media timestamp, ``now`` local ns."""
        s = self._speakers.get(speaker)
        if s is None:
            if len(self._speakers) >= MAX_SPEAKERS:
                self.refused += 1
                return
            s = self._speakers[speaker] = _Speaker(self._make_jitter(), OpusDecoder())
        restarts = s.jitter.restarts
        s.jitter.push(seq, timestamp, payload, now)
        if s.jitter.restarts != restarts:  # a new stream: the old one's decoder state is noise
            s.decoder.reset()
        if len(s.pushed_at) >= 256:  # entries of late or duplicate packets never pop: forget
            s.pushed_at.clear()
        s.pushed_at[seq] = now

    def render(
        self, now: int, deafened: bool = False, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, Rendered]:
        """One mixed 20 ms frame and what is in it.

        The frame is written into ``out`` (float32[960], e.g. a playback ring slot from
        ``Ring.claim()``) and returned; without ``out`` it is an internal buffer, valid
        until the next call.
        """
        target = self._out if out is None else out
        info = Rendered()
        frames = self._frames
        frames.clear()
        for uid, s in list(self._speakers.items()):
            action = s.jitter.pop(now)
            try:
                pcm = self._decode(s, action)
            except CodecError:
                s.decode_errors += 1
                pcm = None
            if isinstance(action, Frame):
                arrived = s.pushed_at.pop(action.seq, None)
                if arrived is not None:
                    info.waited_ns.append(now - arrived)
                if not info.flags & VOICE:
                    info.seq, info.timestamp, info.speaker = action.seq, arrived or 0, uid
                info.flags |= VOICE
                if pcm is not None and float(np.dot(pcm, pcm)) > SPEAKING_RMS**2 * len(pcm):
                    s.last_voice = now
            elif isinstance(action, Conceal | Recover):
                s.pushed_at.pop(action.seq, None)
                if isinstance(action, Recover) and self.fec:
                    info.flags |= RECOVERED
                    s.recovered += 1
                elif self.plc:
                    info.flags |= CONCEALED
                    s.concealed += 1
                else:
                    info.flags |= CONCEALED  # a lost frame, played as silence
                    s.silenced += 1
            if pcm is not None:
                frames.append(pcm)
            if s.jitter.retired:
                del self._speakers[uid]
                self.retired += 1
        if deafened or not frames:
            target.fill(0)
            return target, info
        return self._mixer.mix(frames, target), info

    def _decode(
        self, s: _Speaker, action: Frame | Conceal | Recover | Nothing
    ) -> np.ndarray | None:
        if isinstance(action, Frame):
            return s.decoder.decode(action.payload)
        if isinstance(action, Recover) and self.fec:
            return s.decoder.recover(action.next_payload)
        if isinstance(action, Conceal | Recover) and self.plc:
            return s.decoder.conceal()
        return None  # Nothing, or a loss left silent

    def speaking(self, now: int) -> list[int]:
        return sorted(
            uid for uid, s in self._speakers.items() if now - s.last_voice < SPEAKING_HOLD_NS
        )

    def stats(self) -> list[ev.SpeakerStats]:
        """Every current speaker's jitter buffer and decoder counts, by user id."""
        out: list[ev.SpeakerStats] = []
        for uid, s in sorted(self._speakers.items()):
            st = s.jitter.stats
            out.append(
                ev.SpeakerStats(
                    user_id=uid,
                    depth=st.depth,
                    played=st.played,
                    concealed=s.concealed,
                    recovered=s.recovered,
                    silenced=s.silenced,
                    late=st.late,
                    duplicate=st.duplicate,
                    lost=st.lost,
                    loss_percent=st.loss_percent,
                    late_percent=st.late_percent,
                    decode_errors=s.decode_errors,
                    discarded=st.discarded,
                )
            )
        return out
