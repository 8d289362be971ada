"""Every remote speaker's jitter buffer and decoder, mixed into one frame per tick. Sans-I/O.

The decode stage pushes received packets in and asks for one mixed block (a
quarter frame, ``BLOCK_SAMPLES``: what the playback ring carries) whenever the
playback ring wants one; time is passed in (ns). Each speaker's decoded audio is
queued, and the jitter buffer is asked for the next frame when that queue runs
short of a block: so a packet must be here just before the block its audio starts
in, not before the whole frame it starts in.

A voice body's redundant copies (SPEC.md, "Voice body") go to the jitter buffer after
its primary, which holds one where a primary is missing. Concealment fades out and
audio coming back fades in (pipeline/core/concealment.py): with PLC on, a loss never
plays as a cut to digital silence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline.core.concealment import Fade, ramp_out
from pipeline.core.jitter import Conceal, DelayHistory, Frame, JitterBuffer, Nothing, Recover
from pipeline.core.mixer import Mixer
from pipeline.core.seqnum import MASK
from pipeline.core.timestretch import Pause, StretchBudget, stretch
from pipeline.ipc import events as ev
from pipeline.media.audio_format import FRAME_SAMPLES, SAMPLE_RATE
from pipeline.media.opus import CodecError, OpusDecoder
from relay.protocol.errors import ProtocolError
from relay.protocol.voice_body import VoiceBody

SPEAKING_RMS = 0.01  # a frame louder than this counts as speech for the activity display
SPEAKING_HOLD_NS = 300_000_000  # and keeps the speaker lit this long
# Speakers heard at once: more than any channel talks over itself, and a bound on the
# decoders (and their memory) that a flood of speaker ids could make us allocate.
MAX_SPEAKERS = 64
# A speaker who went quiet long enough to retire and comes back within this long starts
# with the playout delay their path taught before, not from nothing.
HISTORY_KEEP_NS = 60_000_000_000

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
    ahead_ns: int = 0  # how far into the frame that packet's audio starts (time-stretch leftover)
    # That packet's media timestamp (the speaker's capture instant, in 48 kHz samples)
    # moved back by ``ahead``: ear time minus it is the speaker's mouth to this ear, when
    # the two share a clock (the benchmarks, with the talker's clock offset 0).
    media: int = 0
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
    recovered_red: int = 0  # played from a redundant copy
    concealed: int = 0
    silenced: int = 0
    fade: Fade = field(default_factory=Fade)
    # Decoded audio not played yet (adaptive playout): what time-stretching left over.
    queued: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    budget: StretchBudget = field(default_factory=StretchBudget)
    pause: Pause = field(default_factory=Pause)  # whether the audio decoded ends in a pause
    # A block with the listener's volume applied (Speakers sizes it to its block).
    scaled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))


class Speakers:
    def __init__(
        self,
        watermark: int = 2,
        retire_after_ns: int = 2_000_000_000,
        jitter_factory: Callable[[], JitterBuffer] | None = None,
        *,
        fec: bool = True,
        plc: bool = True,
        adaptive: bool = False,
        block: int = FRAME_SAMPLES,
    ) -> None:
        """``fec``: rebuild a lost frame from the next packet's FEC when it is held.
        ``plc``: otherwise synthesise it (Opus PLC); with both off a lost frame is silence.
        ``adaptive``: adaptive playout (start at one packet, follow the measured delay,
        time-stretch) instead of a fixed ``watermark``. ``block``: samples per
        :meth:`render` (a divisor of a frame; the decode stage's is ``BLOCK_SAMPLES``)."""
        if block <= 0 or FRAME_SAMPLES % block:
            raise ValueError(f"block {block} must divide a frame ({FRAME_SAMPLES} samples)")
        self.block = block
        self.block_ns = tick_ns = block * 1_000_000_000 // SAMPLE_RATE  # a render's time
        self._make_jitter = jitter_factory or (
            lambda: JitterBuffer(
                watermark=1 if adaptive else watermark,
                retire_after_ns=retire_after_ns,
                adaptive=adaptive,
                tick_ns=tick_ns,
            )
        )
        self._speakers: dict[int, _Speaker] = {}
        self._histories: dict[int, tuple[int, DelayHistory]] = {}  # retired: (when, history)
        self._mixer = Mixer(block)
        self._out = np.zeros(block, dtype=np.float32)
        self._frames: list[np.ndarray] = []
        self.retired = 0
        self.refused = 0  # packets of a new speaker while MAX_SPEAKERS were being heard
        self.bad_bodies = 0  # voice bodies that did not parse (dropped)
        self.fec, self.plc = fec, plc
        # The listener's volume per speaker (user id -> gain), kept while they are away.
        self.gains: dict[int, float] = {}

    def set_gain(self, speaker: int, gain: float) -> bool:
        """Play ``speaker`` at ``gain`` (0: not at all; 1: as sent). False, and nothing
        changed, when MAX_GAINS speakers have a volume of their own already."""
        gain = min(ev.MAX_GAIN, max(0.0, gain))
        if gain == 1.0:
            self.gains.pop(speaker, None)
        elif speaker in self.gains or len(self.gains) < ev.MAX_GAINS:
            self.gains[speaker] = gain
        else:
            return False
        return True

    def receive(self, speaker: int, seq: int, timestamp: int, body: bytes, now: int) -> None:
        """One received voice body (SPEC.md, "Voice body"); one that does not parse is
        counted in ``bad_bodies`` and dropped."""
        try:
            voice = VoiceBody.parse(body)
        except ProtocolError:
            self.bad_bodies += 1
            return
        self.push(speaker, seq, timestamp, voice.primary, now, voice.marker, voice.end)
        s = self._speakers.get(speaker)
        if s is None:
            return
        for r in voice.redundant:  # frame seq - back, captured back frames earlier
            s.jitter.push_copy(
                (seq - r.back) & MASK,
                (timestamp - r.back * FRAME_SAMPLES) & MASK,
                r.opus,
                now,
                back=r.back,
            )

    def push(
        self,
        speaker: int,
        seq: int,
        timestamp: int,
        payload: bytes,
        now: int,
        marker: bool = False,
        end: bool = False,
    ) -> None:
        """One received Opus packet: ``timestamp`` is the speaker's media timestamp, ``now``
        local ns; ``marker``: it starts a talk spurt, ``end``: it ends one (SPEC.md, "Talk
        spurts")."""
        s = self._speakers.get(speaker)
        if s is None:
            if len(self._speakers) >= MAX_SPEAKERS:
                self.refused += 1
                return
            s = self._speakers[speaker] = _Speaker(
                self._make_jitter(), OpusDecoder(), scaled=np.zeros(self.block, np.float32)
            )
            kept = self._histories.pop(speaker, None)
            if kept is not None and now - kept[0] < HISTORY_KEEP_NS:
                s.jitter.history = kept[1]
        restarts = s.jitter.restarts
        s.jitter.push(seq, timestamp, payload, now, marker, end)
        if s.jitter.restarts != restarts:  # a new stream: the old one's decoder state is noise
            s.decoder.reset()
        if len(s.pushed_at) >= 256:  # entries of late or duplicate packets never pop: forget
            s.pushed_at.clear()
        s.pushed_at[seq] = now

    def render(
        self,
        now: int,
        deafened: bool = False,
        out: np.ndarray | None = None,
        keep: int | None = None,
    ) -> tuple[np.ndarray, Rendered]:
        """One mixed block (``block`` samples) and what is in it.

        The block is written into ``out`` (float32[block], e.g. a playback ring slot from
        ``Ring.claim()``) and returned; without ``out`` it is an internal buffer, valid
        until the next call. ``deafened``: silence, but for speaker ``keep`` (the
        settings' microphone test) if it is given.
        """
        target = self._out if out is None else out
        info = Rendered()
        frames = self._frames
        frames.clear()
        for uid, s in list(self._speakers.items()):
            pcm = self._next_frame(s, now, info, uid)  # ticked even when muted here
            gain = self.gains.get(uid, 1.0)
            if pcm is not None and gain != 1.0 and len(pcm) == self.block:
                pcm = np.multiply(pcm, np.float32(gain), out=s.scaled) if gain else None
            if pcm is not None and (not deafened or uid == keep):
                frames.append(pcm)
            if s.jitter.retired:
                del self._speakers[uid]
                self.retired += 1
                self._keep_history(uid, s.jitter.history, now)
        if not frames:
            target.fill(0)
            return target, info
        return self._mixer.mix(frames, target), info

    def _keep_history(self, uid: int, history: DelayHistory, now: int) -> None:
        self._histories[uid] = (now, history)
        for old in [u for u, (t, _) in self._histories.items() if now - t >= HISTORY_KEEP_NS]:
            del self._histories[old]
        while len(self._histories) > MAX_SPEAKERS:  # a flood of ids cannot grow it
            del self._histories[next(iter(self._histories))]

    def _next_frame(self, s: _Speaker, now: int, info: Rendered, uid: int) -> np.ndarray | None:
        """This speaker's next block: what is queued, and as many frames from the jitter
        buffer as it takes to fill it (after time-stretching), with the rest kept."""
        block = self.block
        parts = [s.queued] if len(s.queued) else []
        have = len(s.queued)
        while have < block:
            pcm = self._tick(s, now, info, uid, queued=have)
            if pcm is None:
                break
            want = s.jitter.stretch_wanted
            if want < 0 and not s.jitter.next_held:
                # A cut takes the next packet sooner: no sooner than it is here (a spurt's
                # pre-roll comes in a burst, and its first packet may be alone at a tick).
                want = min(0, max(want, block - have - len(pcm)))
            s.budget.earn(len(pcm))
            s.pause.heard(pcm)
            urgent = s.jitter.stretch_urgent
            if want and (urgent or s.pause.before(have + len(pcm))):
                joined = np.concatenate([*parts, pcm]) if parts else pcm
                joined, change = stretch(joined, want, s.budget, quiet_only=not urgent)
                if change:
                    s.jitter.stretched(change)
                    parts, have = [joined], len(joined)
                    continue
            parts.append(pcm)
            have += len(pcm)
        if not parts:
            s.queued = s.queued[:0]
            return None
        audio = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if len(audio) < block:  # the talk spurt ended: play what is left
            if s.fade.gain > 0.0:  # it ended without a fade (a reset, a catch-up)
                audio = ramp_out(audio.copy())
            audio = np.concatenate([audio, np.zeros(block - len(audio), np.float32)])
        s.queued = audio[block:].copy()
        return audio[:block]

    def _tick(
        self, s: _Speaker, now: int, info: Rendered, uid: int, queued: int = 0
    ) -> np.ndarray | None:
        """One jitter-buffer decision, decoded (None: nothing to play)."""
        action = s.jitter.pop(now, queued)
        from_packet = isinstance(action, Frame) or (isinstance(action, Recover) and self.fec)
        try:
            pcm = self._decode(s, action)
        except CodecError:
            s.decode_errors += 1
            pcm, from_packet = self._conceal_instead(s), False
        if isinstance(action, Frame):
            if action.redundant:
                s.recovered_red += 1
            arrived = s.pushed_at.pop(action.seq, None)
            # Its audio starts after what is queued ahead of it: that wait counts too.
            ahead = queued * 1_000_000_000 // SAMPLE_RATE
            if arrived is not None:
                info.waited_ns.append(now - arrived + ahead)
            if not info.flags & VOICE:
                info.seq, info.speaker = action.seq, uid
                info.timestamp = arrived - ahead if arrived else 0
                info.ahead_ns = ahead
                info.media = (action.timestamp - queued) & MASK
            info.flags |= VOICE
            if pcm is not None and float(np.dot(pcm, pcm)) > SPEAKING_RMS**2 * len(pcm):
                s.last_voice = now
            if action.end and pcm is not None:  # the spurt's last: silence follows, no click
                pcm = ramp_out(pcm.copy())
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
                if s.jitter.adaptive:
                    pcm = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        if self.plc:  # no concealment, no fade: "neither" plays its holes on purpose
            if pcm is None:
                s.fade.silent()
            elif from_packet:
                s.fade.decoded(pcm)
            else:
                s.fade.concealed(pcm)
        return pcm

    def _conceal_instead(self, s: _Speaker) -> np.ndarray | None:
        """A packet that would not decode: PLC in its place (when PLC is on)."""
        if not self.plc:
            return None
        try:
            return s.decoder.conceal()
        except CodecError:
            return None

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

    @property
    def heard(self) -> bool:
        """Whether any speaker is being heard (held or played since they last retired)."""
        return bool(self._speakers)

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
                    recovered_red=s.recovered_red,
                    silenced=s.silenced,
                    late=st.late,
                    duplicate=st.duplicate,
                    lost=st.lost,
                    loss_percent=st.loss_percent,
                    late_percent=st.late_percent,
                    burst_mean=round(st.burst_mean, 2),
                    decode_errors=s.decode_errors,
                    discarded=st.discarded,
                    target_ms=round(st.target_ms, 1),
                    delay_ms=round(st.delay_ms, 1),
                    accelerated_ms=round(st.accelerated_ms, 1),
                    expanded_ms=round(st.expanded_ms, 1),
                    waited=st.waited,
                    spurt_ends=st.spurt_ends,
                )
            )
        return out
