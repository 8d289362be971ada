"""Per-speaker jitter buffer with loss concealment decisions, sans-I/O.

The decode stage owns one :class:`JitterBuffer` (and one Opus decoder) per speaker.
It pushes every received packet with ``push(seq, timestamp, payload, now)`` (the
timestamp is the sender's media timestamp, in 48 kHz samples; ``now`` is this
machine's monotonic ns: the two are never mixed) and, whenever the audio decoded for
the speaker runs short of a playback block (so once per 20 ms of audio played), asks
``pop(now)`` what to play next:

* :class:`Frame`   - the packet for the next expected sequence number: decode it;
* :class:`Recover` - that packet is missing but the one after it is held: decode the
  missing frame from the next packet's in-band FEC (``OpusDecoder.recover``);
* :class:`Conceal` - missing with nothing to recover from: Opus PLC;
* :class:`Nothing` - buffering (not started, or rebuffering after running dry).

A :class:`Frame` may be a redundant copy (``redundant``): ``push_copy`` hands over the
lower-bitrate copies of earlier frames that a voice body carries (SPEC.md, "Voice
body"), and one is held in place of a primary that is missing and still due, so it plays
before in-band FEC or PLC is tried. It is counted ``recovered_red``, and as lost: the
primary did not come, which is what the sender must hear.

Rules (SPEC.md "Jitter buffer and loss concealment" and issue 4):

* Packets are held in a heap by sequence number; nothing comes out until ``watermark``
  packets are held. Each tick then consumes the next expected sequence number, so
  the sequence numbers of everything returned strictly increase.
* Older than (or equal to) the last sequence number returned: dropped, counted late.
  Already held: dropped, counted duplicate.
* Running dry mid-talk (the speaker paused, or a burst outran the buffer): at most
  ``max_underrun`` concealments with nothing held, then back to buffering. The default
  is ``CONCEAL_FRAMES``, the length of the decoder side's concealment fade
  (pipeline/core/concealment.py): a burst that short is concealed throughout, and a
  longer one has faded to silence before the buffer stops, so no mid-talk loss ever
  cuts to digital silence.
* A gap with later packets held: conceal, but after ``max_conceal`` consecutive
  concealments skip straight to the earliest held packet rather than conceal a long
  hole while holding audio (the skipped numbers are lost).
* More than ``max_depth`` held (a sender burst or a stalled consumer): the oldest are
  dropped to catch up, counted as overflow.
* Sequence restart (a new stream from the same speaker, e.g. after a reconnect): a
  packet whose sequence number is at or behind the last one played but whose capture
  timestamp is well after where the old stream would have put it (``restart_slack``)
  is the start of a new stream: the buffer resets and starts over with it. A genuine
  late packet carries the old timestamp that matches its sequence number.
* A backlog (more than ``watermark + catchup_slack`` held for ``catchup_after_ns``
  on end, as after a stalled path or relay delivers everything at once, or a sink
  that stopped taking frames): the oldest held packets are discarded down to the
  watermark, so the delay returns to normal instead of staying seconds behind;
  counted as ``discarded``, not as loss.
* Silent (no push) for ``retire_after_ns``: :attr:`retired` turns true; a later push
  starts a fresh stream.
* Talk spurts (SPEC.md, "Talk spurts"): a packet with the marker starts a spurt after
  a pause in which its speaker sent nothing. Sequence numbers go on +1 per packet
  sent, so the pause is no gap and no loss; if the previous spurt has played out, the
  buffer starts over at the marked packet (the dry ticks concealed at the end of the
  last spurt consumed no number of this one), and with adaptive playout it waits for
  the target delay before playing it, as at the very start: the boundary is where the
  delay changes for free. The sender's pre-roll comes in a burst with the marked
  packet, held back on purpose, so packets that arrive within ``BURST_NS`` of it are
  left out of the delay statistics.
* ``lost`` counts sequence numbers that never played as a Frame between two that did
  (recovered, concealed, skipped or arriving late); ``loss_percent`` is that over the
  last 10 s of played frames: the network loss the encoder's FEC hint wants. A gap
  longer than ``max_depth`` is a discontinuity, not loss, and is not counted.
  ``burst_mean`` is the mean length of the runs of consecutive lost numbers in that
  window: 1 for independent loss, more when losses come in bursts (what the sender's
  redundancy is chosen from, pipeline/core/redundancy.py).
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from dataclasses import dataclass, field

from pipeline.core.concealment import CONCEAL_FRAMES
from pipeline.core.redundancy import DEPTH_HOLD, MAX_BACK
from pipeline.core.seqnum import MASK, seq_add, seq_diff
from pipeline.media.audio_format import FRAME_NS, FRAME_SAMPLES, SAMPLE_RATE

LOSS_WINDOW_NS = 10_000_000_000
# How long the deepest redundant copy seen keeps its frames held after it was last seen:
# as long as a sender holds its depth before lowering it, so that a depth that goes down
# and up again with the listeners' figures does not move the delay.
RED_HOLD_NS = int(DEPTH_HOLD * 1_000_000_000)
TARGET_EVERY_NS = 100_000_000  # how often the adaptive target is worked out again
STEP_SAMPLES = 40  # packets a step down in delay must hold for
STEP_MIN_NS = 5_000_000  # how much faster than all before them they must all be
STEP_KTH = 4  # of all before them but the three fastest
STEP_BEFORE = 18  # and at least this many before them (fewer: a stall, 8 at 150 ms)
BURST_NS = 3_000_000  # packets this close after a spurt's marked one: its pre-roll burst
# How far above the aim the deadline must stay for the delay to step down a whole frame:
# without it, an aim that wobbles across a frame's edge would cut and add a frame by turns.
STEP_GUARD_NS = 2_000_000


@dataclass(slots=True, frozen=True)
class Frame:
    seq: int
    timestamp: int
    payload: bytes
    redundant: bool = False  # a redundant copy standing in for a lost primary
    end: bool = False  # the sender's last of its talk spurt, with nothing held after it


@dataclass(slots=True, frozen=True)
class Conceal:
    seq: int


@dataclass(slots=True, frozen=True)
class Recover:
    seq: int
    next_payload: bytes


@dataclass(slots=True, frozen=True)
class Nothing:
    pass


NOTHING = Nothing()
Output = Frame | Conceal | Recover | Nothing


@dataclass(slots=True)
class JitterStats:
    depth: int = 0  # packets held now
    played: int = 0  # Frames returned
    concealed: int = 0  # Conceals returned
    recovered: int = 0  # Recovers returned
    recovered_red: int = 0  # redundant copies played in place of a lost primary
    late: int = 0  # dropped: at or behind what was already returned
    duplicate: int = 0  # dropped: already held
    overflow: int = 0  # dropped: held beyond max_depth
    lost: int = 0  # sequence numbers missing between played Frames
    loss_percent: float = 0.0  # lost / (lost + played) over the last 10 s
    late_percent: float = 0.0  # late arrivals / (lost + played) over the last 10 s
    burst_mean: float = 0.0  # mean run of consecutive lost numbers over the last 10 s
    restarts: int = 0  # sequence restarts and retirements followed by a new stream
    underruns: int = 0  # times the buffer ran dry and went back to buffering
    spurt_ends: int = 0  # talk spurts that ended where their sender said (nothing concealed)
    discarded: int = 0  # held packets dropped to catch up after a backlog built up
    # Adaptive playout (all 0 for a fixed watermark). Delays are relative to the fastest
    # packet of the last ``window_ns``: what jitter costs on top of the path's own delay.
    target_ms: float = 0.0  # the playout delay aimed at: the delay quantile plus margin
    delay_ms: float = 0.0  # the playout delay of the last frame played
    accelerated_ms: float = 0.0  # audio removed by time-stretching, in total
    expanded_ms: float = 0.0  # audio inserted by time-stretching, in total
    waited: int = 0  # ticks concealed while waiting for a packet that then played
    steps: int = 0  # times the delay stepped down for good and the older delays were forgotten


@dataclass(slots=True)
class DelayHistory:
    """Adaptive playout's memory of a speaker's path: the relative delay ``d = arrival -
    media time`` of every packet in the last window (ns), and the target derived from it."""

    ts0: int | None = None  # media timestamp the media times count from
    delays: deque[tuple[int, int]] = field(default_factory=deque)  # (arrival, d)
    target_d: int | None = None  # the d below which packets should arrive
    target_at: int = 0  # when the target was last worked out from the window
    fastest: int = 0  # the smallest d in the window, then
    provisional: bool = False  # target_d is the first seconds' guess, not a quantile yet
    outlier_since: int | None = None  # first arrival of a run of outage packets


class JitterBuffer:
    """One speaker's reordering buffer; time is passed in (ns of monotonic_ns)."""

    def __init__(
        self,
        watermark: int = 2,
        retire_after_ns: int = 2_000_000_000,
        max_depth: int = 50,
        *,
        max_underrun: int | None = None,
        max_conceal: int = 5,
        restart_slack: int = 200 * SAMPLE_RATE // 1000,  # 200 ms of media timestamp
        catchup_slack: int = 3,
        catchup_after_ns: int = 1_000_000_000,
        adaptive: bool = False,
        margin_ns: int = 6_000_000,
        quantile: float = 0.97,
        window_ns: int = 10_000_000_000,
        hysteresis_ns: int = 5_000_000,
        max_hysteresis_ns: int = 50_000_000,
        queue_slack_ns: int = 5_000_000,
        urgent_ns: int = 60_000_000,
        urgent_wait_ns: int = 3_000_000_000,
        settle_ns: int = 3_000_000_000,
        decay_ns_per_s: int = 5_000_000,
        backlog_ns: int = 200_000_000,
        max_target_ns: int = 300_000_000,
        outage_ns: int = 1_000_000_000,
        fec_headroom_after: int = 2,
        early_samples: int = 150,
        early_extra_ns: int = 10_000_000,
        early_z: float = 2.5,
        start_samples: int = 8,
        start_wait_ns: int = 200_000_000,
        clean_start_ns: int = 5_000_000,
        max_red_headroom: int = MAX_BACK,
        tick_ns: int = FRAME_NS,
    ) -> None:
        if not 1 <= watermark <= max_depth:
            raise ValueError(f"watermark {watermark} must be in 1..max_depth ({max_depth})")
        self.watermark = watermark
        self.retire_after_ns = retire_after_ns
        self.max_depth = max_depth
        # Dry ticks concealed before buffering again: as long as the concealment takes to
        # fade out, so that a burst never cuts to silence (and adaptive playout waits
        # meanwhile, as the packet it waits for may still come).
        self.max_underrun = max_underrun if max_underrun is not None else CONCEAL_FRAMES
        self.max_conceal = max_conceal
        self.restart_slack = restart_slack
        self.catchup_slack = catchup_slack
        self.catchup_after_ns = catchup_after_ns
        self.adaptive = adaptive
        self.margin_ns = margin_ns
        self.quantile = quantile
        self.window_ns = window_ns
        self.hysteresis_ns = hysteresis_ns
        self.max_hysteresis_ns = max_hysteresis_ns
        self.queue_slack_ns = queue_slack_ns  # queued audio held (more is shed) at the aim
        self.urgent_ns = urgent_ns
        # Far too much held still waits this long for a pause before speech is stretched.
        self.urgent_wait_ns = urgent_wait_ns
        self.settle_ns = settle_ns
        self.decay_ns_per_s = decay_ns_per_s
        self.backlog_ns = backlog_ns
        self.max_target_ns = max_target_ns
        self.outage_ns = outage_ns
        self.fec_headroom_after = fec_headroom_after  # losses in the last 10 s
        # Until the window holds early_samples delays, a quantile of so few says little
        # (the 97th of 30 is below their largest): wait for the largest seen, and more.
        self.early_samples = early_samples
        self.early_extra_ns = early_extra_ns
        self.early_z = early_z  # and no less than mean + early_z s.d. of those seen
        # A stream's first start (nothing learnt of the path yet) waits for start_samples
        # packets or start_wait_ns, unless its first two arrive within clean_start_ns of
        # their spacing; what the head then waited beyond the aim is dropped, not played late.
        self.start_samples = start_samples
        self.start_wait_ns = start_wait_ns
        self.clean_start_ns = clean_start_ns
        self.max_red_headroom = max_red_headroom  # frames held for copies, at most
        # How often pop may be asked (the playback block, SPEC.md "Audio constants"): the
        # deadline of a frame moves in steps of this, not of a frame.
        self.tick_ns = tick_ns
        self.stretch_wanted = 0  # samples: + lengthen, - shorten (adaptive, after a Frame)
        self.stretch_urgent = False  # stretch speech too, not only quiet audio
        self._stats = JitterStats()
        # What the adaptive playout learnt of this speaker's path; it outlives a pause (and
        # Speakers hands it to the next buffer when a speaker comes back after retiring).
        self.history = DelayHistory()
        # (now, played, lost) per played Frame, for loss_percent over the last 10 s.
        self._window: deque[tuple[int, int, int]] = deque()
        self._win_played = 0
        self._win_lost = 0
        self._win_runs = 0  # played Frames with a gap before them: runs of loss
        self._red_back = 0  # the deepest redundant copy seen lately (packets back)
        self._red_at = 0  # when
        self._late_times: deque[int] = deque()  # arrival of each late packet, last 10 s
        self._now: int | None = None
        self._last_arrival: int | None = None
        self._reset()

    def _reset(self) -> None:
        # Sequence numbers are unwrapped to "ext" Python ints (ext % 2**64 == seq) so the
        # heap orders correctly across the u64 wrap.
        self._heap: list[int] = []
        self._held: dict[int, tuple[int, bytes]] = {}  # ext -> (timestamp, payload)
        self._copies: set[int] = set()  # exts held as redundant copies, not primaries
        self._ref: tuple[int, int] | None = None  # (ext, seq) of the last push
        self._playing = False
        self._next = 0  # ext of the next tick's sequence number, while playing
        self._last_out: int | None = None  # ext of the last thing returned
        self._last_frame: tuple[int, int] | None = None  # (ext, timestamp) of the last Frame
        self._restart: tuple[int, int] | None = None  # (ext, timestamp) that began this stream
        self._underruns = 0
        self._gap_run = 0
        self._deep_since: int | None = None  # when the held count rose above the slack
        self._pending_waits = 0  # dry concealments not yet followed by a Frame
        self._hole_waits = 0  # concealments waiting for the copy of a frame in a hole
        self._aim: int | None = None  # the playout delay aimed at, at the last Frame
        self._last_playout = 0  # and the playout delay that Frame had
        self._raised_at: int | None = None  # when the delay last had to grow
        self._urgent_since: int | None = None  # when the excess last went past urgent_ns
        self._starts: set[int] = set()  # ext of held packets that start a talk spurt
        self._ends: set[int] = set()  # ext of held packets that end one
        self._spurt_over = False  # the last Frame played ended its spurt
        self._burst_until: int | None = None  # a spurt's pre-roll burst arrives until then
        self._stream_at: int | None = None  # first arrival of this stream, until it starts
        self._stream_marked = False  # and whether it came with a talk spurt's marker
        self._ran_dry = False  # buffering again after an underrun, not yet playing

    # --- input ---

    def push(
        self,
        seq: int,
        timestamp: int,
        payload: bytes,
        now: int,
        marker: bool = False,
        end: bool = False,
    ) -> None:
        """Hand over one received packet; ``marker``: it starts a talk spurt, ``end``: it
        is the last of one (what follows is the pause, not a loss to conceal)."""
        self._now = now
        if self.retired:
            self._stats.restarts += 1
            self._reset()
        self._last_arrival = now
        seq &= MASK
        if self._ref is None:
            ext = seq
        else:
            ref_ext, ref_seq = self._ref
            ext = ref_ext + seq_diff(seq, ref_seq)
        if self._is_straggler(ext, timestamp):
            self._late(now)  # a packet of the stream a restart replaced
            return
        if self._stream_at is None and self._last_out is None and not self._heap:
            self._stream_at, self._stream_marked = now, marker
        if marker:
            self._burst_until = now + BURST_NS
            self._ran_dry = False  # a talker's pause, not a stall: its pre-roll plays
            if self._last_frame is not None and ext > self._last_frame[0]:
                self._spurt(ext)
        in_burst = self._burst_until is not None and now <= self._burst_until
        if self._last_out is not None and ext <= self._last_out:
            if self._is_restart(ext, timestamp):
                self._stats.restarts += 1
                self._reset()
                self.history = DelayHistory()  # a new stream may run on another clock
                self._restart = (seq, timestamp)
                ext = seq
            else:
                if self.adaptive:  # its lateness is what the target must cover
                    self._record_delay(timestamp, now)
                self._late(now)
                return
        copied = ext in self._copies  # the primary after all, better than its copy
        if copied:
            self._copies.discard(ext)
        elif ext in self._held:
            self._stats.duplicate += 1
            return
        self._ref = (ext, seq)
        # A primary that comes after its copy is a delay like any other: on a jittery
        # path with copies, the late ones (which the copies answer) would otherwise be
        # left out, and the target would miss the tail it must cover.
        if self.adaptive and not in_burst:
            self._record_delay(timestamp, now)
        if end:
            if len(self._ends) >= 8:  # ends that never played (dropped to catch up)
                self._ends = {x for x in self._ends if x >= self._next}
            self._ends.add(ext)
        self._held[ext] = (timestamp, bytes(payload))
        if copied:
            return  # already in the heap
        heapq.heappush(self._heap, ext)
        while len(self._heap) > self.max_depth:
            self._drop_oldest()

    def _spurt(self, ext: int) -> None:
        """A packet after everything played starts a talk spurt."""
        if ext in self._held:
            return
        if self._heap:  # the last spurt is still held: this one starts once it has played
            if len(self._starts) >= 8:  # starts that never came up (dropped to catch up)
                self._starts = {x for x in self._starts if x >= self._next}
            self._starts.add(ext)
            return
        # Played out: what was concealed since was its fading end, not a wait for this.
        self._playing = False
        self._pending_waits = 0
        self._last_out = ext - 1

    def push_copy(self, seq: int, timestamp: int, payload: bytes, now: int, back: int) -> bool:
        """Hand over a redundant copy of an earlier frame (after the packet that carried
        it): held in place of its primary if that is missing and still due, else ignored
        (neither late nor duplicate: most copies are of frames that did arrive). Returns
        whether it was taken. Its arrival says nothing about the path's delay. ``back``:
        how many frames before its carrier the copy is, as the body says. (Not the
        distance to the last primary pushed: a carrier that came late is not that one,
        and the buffer held as many frames more for copies as the carrier was late.)"""
        if self._ref is None or self.retired:
            return False
        ref_ext, ref_seq = self._ref
        ext = ref_ext + seq_diff(seq & MASK, ref_seq)
        if not 0 < back <= self.max_depth or ext in self._held:
            return False
        if back >= self._red_back or now - self._red_at > RED_HOLD_NS:
            self._red_back, self._red_at = back, now
        if self._last_out is None:
            if not self._heap or ext < self._heap[0]:
                return False  # before the stream's first frame: nothing to stand in for
        elif ext <= self._last_out:
            return False
        if self._is_straggler(ext, timestamp):
            return False
        if len(self._heap) >= self.max_depth:
            return False  # full: a copy must not push out a primary (nor count overflow)
        self._held[ext] = (timestamp, bytes(payload))
        self._copies.add(ext)
        heapq.heappush(self._heap, ext)
        return True

    def _late(self, now: int) -> None:
        self._stats.late += 1
        self._late_times.append(now)

    def _is_straggler(self, ext: int, timestamp: int) -> bool:
        # Captured before the packet that restarted the stream, yet numbered at or after
        # it (or long before it): the old stream, not this one reordered.
        if self._restart is None:
            return False
        r_ext, r_ts = self._restart
        before = seq_diff(timestamp, r_ts)
        return before < -self.restart_slack or (before < 0 and ext >= r_ext)

    def _is_restart(self, ext: int, timestamp: int) -> bool:
        if self._last_frame is None:
            return False
        f_ext, f_ts = self._last_frame
        expected = f_ts + (ext - f_ext) * FRAME_SAMPLES
        return seq_diff(timestamp, expected) > self.restart_slack

    def _drop_oldest(self) -> None:
        ext = heapq.heappop(self._heap)
        del self._held[ext]
        self._copies.discard(ext)
        self._stats.overflow += 1
        # Catch up: the dropped number counts as consumed, so it cannot play later.
        self._last_out = ext if self._last_out is None else max(self._last_out, ext)
        if self._playing and self._next <= ext:
            self._next = ext + 1

    # --- output ---

    def pop(self, now: int, queued: int = 0) -> Output:
        """What to play for the next 20 ms.

        ``queued``: samples already decoded for this speaker and not yet played (the
        time-stretcher's leftover), which the adaptive playout delay includes.
        """
        self._now = now
        self.stretch_wanted = 0
        self.stretch_urgent = False
        if not self._playing:
            if len(self._heap) < self.watermark or not self._ready(now):
                return NOTHING
            self._playing = True
            self._ran_dry = False
            self._stream_at = None  # started: later starts are spurts on a known path
            self._next = self._heap[0]
            self._underruns = 0
            self._gap_run = 0
        self._catch_up(now)
        e = self._next
        if e in self._starts:
            self._starts.discard(e)
            if self.adaptive and e in self._held:
                self._playing = False  # a new spurt: wait for its target, as at the start
                return self.pop(now, queued)
        if e in self._held:
            return self._play(e, now, queued)
        if self._heap:  # a hole with later packets held
            self._spurt_over = False  # what comes is no pause
            copy_may_come = self._copy_may_come(e, now)
            if self._pending_waits and not copy_may_come:
                # The waits' concealments already stood in for e (and the numbers after
                # it, one a wait), lost after all: go on as if they had played, so no
                # delay is added (unless e's copy may still come, below).
                covered, self._pending_waits = self._pending_waits, 0
                while covered and e not in self._held:
                    self._consume(e)
                    e = self._next
                    covered -= 1
                if e in self._held:
                    return self._play(e, now, queued)
            if e + 1 in self._held and e + 1 not in self._copies:  # a copy carries no FEC
                self._consume(e)
                self._gap_run = 0
                self._stats.recovered += 1
                return Recover(e & MASK, self._held[e + 1][1])
            if copy_may_come:
                # Wait for it rather than give the frame up: the concealment stands in for
                # it (as it would for a frame given up), the copy plays when it comes, and
                # the delay grows by a frame towards the depth the copies need, in the burst
                # rather than by lengthening the audio around it.
                self._hole_waits += 1
                self._raised_at = now
                self._stats.concealed += 1
                return Conceal(e & MASK)
            self._gap_run += 1
            if self._gap_run > self.max_conceal:
                self._next = self._heap[0]
                return self._play(self._next, now, queued)
            self._consume(e)
            self._stats.concealed += 1
            return Conceal(e & MASK)
        if self._spurt_over:
            # Dry after the frame the sender said was its spurt's last: the pause of a
            # talker, not a loss. Nothing to conceal or fade: wait for the next spurt.
            self._spurt_over = False
            self._playing = False
            self._pending_waits = 0
            self._stats.spurt_ends += 1
            return NOTHING
        # Dry: conceal a little, then buffer again.
        if self._underruns >= self.max_underrun:
            self._playing = False
            self._ran_dry = True
            self._stats.underruns += 1
            self._pending_waits = 0
            return NOTHING
        self._underruns += 1
        self._stats.concealed += 1
        if self.adaptive:
            # Wait rather than give the packet up: the concealment stands in for it and
            # the packet still plays when it comes, a tick later (the delay grows by a
            # frame, which the time-stretcher takes back once the path allows).
            self._pending_waits += 1
            self._raised_at = now
            return Conceal(e & MASK)
        self._consume(e)
        return Conceal(e & MASK)

    # --- adaptive playout ---

    def _ts_ns(self, timestamp: int) -> int:
        if self.history.ts0 is None:
            self.history.ts0 = timestamp
        return seq_diff(timestamp, self.history.ts0) * 1_000_000_000 // SAMPLE_RATE

    def _record_delay(self, timestamp: int, now: int) -> None:
        d = now - self._ts_ns(timestamp)
        if self.history.target_d is not None and d > self.history.target_d + self.backlog_ns:
            # Far later than anything the target allows: an outage (a frozen relay, a path
            # that stalled for seconds and then delivered everything at once) says nothing
            # about jitter, and is left out, unless it lasts (the path's delay really rose).
            if self.history.outlier_since is None:
                self.history.outlier_since = now
            if now - self.history.outlier_since < self.outage_ns:
                return
        else:
            self.history.outlier_since = None
        self.history.delays.append((now, d))
        while self.history.delays and now - self.history.delays[0][0] > self.window_ns:
            self.history.delays.popleft()

    def _target(self, now: int) -> int | None:
        """The relative delay to wait for: a high quantile, rising at once, decaying slowly.

        Worked out from the window every TARGET_EVERY_NS, not every tick: sorting the
        10 s window is the costly step of a frame, and the target moves slowly anyway."""
        h = self.history
        if not h.delays or (h.target_d is not None and now - h.target_at < TARGET_EVERY_NS):
            return h.target_d
        self._forget_before_step(now)
        ds = sorted(d for _, d in self.history.delays)
        h.fastest = ds[0]
        # Never more than max_target_ns above the fastest packet: a path that stalled for
        # seconds says nothing about its jitter, and must not hold the delay up for long.
        q = ds[min(len(ds) - 1, int(self.quantile * len(ds)))]
        early = len(ds) < self.early_samples
        if early:  # the extra grows with the spread seen: a clean
            q = max(q, ds[-1] + min(self.early_extra_ns, ds[-1] - ds[0]))  # path gets none
            if len(ds) >= 4:  # the largest of a few is below the quantile of many
                mean = sum(ds) / len(ds)
                sd = (sum((d - mean) ** 2 for d in ds) / (len(ds) - 1)) ** 0.5
                q = max(q, int(mean + self.early_z * sd))
        q = min(q, ds[0] + self.max_target_ns)
        if self.history.target_d is None or (self.history.provisional and not early):
            # The first seconds' guess (the largest delay seen, and more) gives way to the
            # quantile at once, not at the slow decay: a stream whose sender stalled as it
            # started (its first packet on time, the next ones in a burst 150 ms later)
            # made a guess that would otherwise hold its delay for 30 s or more.
            self.history.target_d = q
        else:
            decayed = (
                self.history.target_d
                - self.decay_ns_per_s * (now - self.history.target_at) // 10**9
            )
            self.history.target_d = max(q, decayed)
        self.history.provisional = early
        self.history.target_at = now
        return self.history.target_d

    def _forget_before_step(self, now: int) -> None:
        """Forget the delays from before a step down: when the last STEP_SAMPLES or more
        packets all came faster, by STEP_MIN_NS or more, than every packet before them (all
        but the three fastest: those that overtook the last slow ones),
        the path (or the sender's clock) changed: the older delays are no jitter of this
        path and would hold the target up for as long as they take to decay. A sender's
        first packets often come so (its capture clock settling: 36-43 ms later stamps
        after the first 0.4-0.7 s through PulseAudio); jitter, even with stalls, does not."""
        h = self.history
        ds = [d for _, d in h.delays]
        n = len(ds)
        if n < STEP_SAMPLES + STEP_BEFORE:
            return
        # Any split needs the last STEP_SAMPLES below the first STEP_BEFORE (but three):
        # nearly always false, and cheap, so the whole search runs only when it may find one.
        first = sorted(ds[:STEP_BEFORE])[STEP_KTH - 1]
        if max(ds[-STEP_SAMPLES:]) + STEP_MIN_NS > first:
            return
        # before[i]: the STEP_KTH-th smallest delay of packets 0..i-1 (not the smallest: at a
        # step of the path's delay, the first faster packets overtake the last slow ones)
        before = [0] * n
        smallest: list[int] = []
        for i in range(n):
            before[i] = smallest[STEP_KTH - 1] if len(smallest) >= STEP_KTH else -(1 << 62)
            bisect.insort(smallest, ds[i])
            del smallest[STEP_KTH:]
        high = ds[-1]  # the largest delay of packets i..n-1, walking back
        split = 0
        for i in range(n - 1, STEP_BEFORE - 1, -1):
            high = max(high, ds[i])
            if n - i >= STEP_SAMPLES and high + STEP_MIN_NS <= before[i]:
                split = i
                break
        if not split:
            return
        for _ in range(split):
            h.delays.popleft()
        h.target_d = None  # from what is left: the path as it is now
        self._stats.steps += 1

    def _fastest(self) -> int:
        return self.history.fastest

    def _ready(self, now: int) -> bool:
        """Adaptive start: the first held packet has waited until the target delay."""
        if not self.adaptive:
            return True
        first = self._stream_at is not None  # the stream's first start
        if first:
            if len(self.history.delays) < self.start_samples and not self._first_start_due(now):
                return False  # nothing learnt of this path yet
            self.history.target_at = -TARGET_EVERY_NS  # from every delay seen, now
        target = self._target(now)
        if target is None:
            return True
        aim = self._aim_for(target)
        ts, _ = self._held[self._heap[0]]
        if self._deadline(now, ts) < aim and len(self._heap) * FRAME_NS < self.backlog_ns:
            return False
        if self._ran_dry or (
            first and not self._stream_marked and len(self.history.delays) < self.early_samples
        ):
            self._drop_early_head(now, aim)
        return True

    def _first_start_due(self, now: int) -> bool:
        """Whether a stream whose path taught nothing yet may start: start_wait_ns after
        its first packet, or once start_samples delays are known, or at once if all those
        known (two or more) lie within clean_start_ns (a clean path, which must not pay
        for the wait)."""
        assert self._stream_at is not None
        if now - self._stream_at >= self.start_wait_ns:
            return True
        ds = [d for _, d in self.history.delays]
        return len(ds) >= 2 and max(ds) - min(ds) < self.clean_start_ns

    def _drop_early_head(self, now: int, aim: int) -> None:
        """At a stream's first start, the packets held while its path was being learnt
        that are already past the aim are dropped (counted discarded): played, they would
        keep the wait as added delay, or cost the stretching that takes it back. Not when
        the stream began with a talk spurt's marker: its head is the sender's pre-roll,
        and the spurt's end sheds the delay for free. The same when playing starts again
        after an underrun (a sender or path that stalled for longer than the concealment
        lasts, then delivered what it held at once): what the listener heard fade out is
        not played late, which would hold the stall's length as delay (200 ms of a
        sender's stall stayed as 180 ms, below what the backlog cut takes back)."""
        while len(self._heap) >= 2:
            ts, _ = self._held[self._heap[1]]
            if self._deadline(now, ts) < aim:
                return
            self._discard_oldest()

    def _aim_for(self, target: int) -> int:
        """The playout delay to hold: the target and margin, and while this speaker's
        packets get lost, one frame more, so that the packet after a lost one is in hand
        when the lost one is due and its in-band FEC can rebuild it."""
        headroom = FRAME_NS if self._win_lost >= self.fec_headroom_after else 0
        # Redundancy reaches further back: hold the packet whose copy rebuilds a frame lost
        # in a burst, as far back as the sender's copies have lately gone.
        return target + self.margin_ns + max(headroom, FRAME_NS * self._copies_reach())

    def _copies_reach(self) -> int:
        """Frames held for the sender's copies (0: none): as far back as they have gone in
        the last RED_HOLD_NS, beyond FEC's one, while this speaker's packets get lost."""
        if self._win_lost < self.fec_headroom_after or self._red_back <= 1:
            return 0
        if self._now is None or self._now - self._red_at > RED_HOLD_NS:
            return 0
        return min(self._red_back, self.max_red_headroom)

    def _copy_may_come(self, e: int, now: int) -> bool:
        """Whether missing frame ``e`` (later ones held) is worth a tick's wait: frames are
        held for the sender's copies, e's deadline is still below the aim (climbing to
        the depth the copies need: at the aim, a copy that has not come in time will not),
        and it has not waited for ``e`` as many ticks as the copies reach back."""
        reach = self._copies_reach() if self.adaptive else 0
        if self._hole_waits >= reach:  # none held for copies (reach 0), or waited enough
            return False
        target = self._target(now)
        if target is None:
            return False
        head = self._heap[0]
        ts = seq_add(self._held[head][0], -(head - e) * FRAME_SAMPLES)  # e's media time
        return self._deadline(now, ts) < self._aim_for(target)

    def _deadline(self, now: int, timestamp: int) -> int:
        """How long after its media time a frame taken out now had to be here: the delay
        against which packets are late (the aim is one for this)."""
        return now - self._ts_ns(timestamp)

    def _playout(self, now: int, queued: int, timestamp: int) -> int:
        """When a frame taken out now is heard, after what is queued ahead of it."""
        return self._deadline(now, timestamp) + queued * 1_000_000_000 // SAMPLE_RATE

    def _steer(self, now: int, queued: int, timestamp: int) -> None:
        """After a Frame: how much the time-stretcher should lengthen or shorten."""
        target = self._target(now)
        if target is None:
            return
        aim = self._aim_for(target)
        playout = self._playout(now, queued, timestamp)
        deadline = self._deadline(now, timestamp)
        # What is queued ahead of a frame is heard before it but was taken out with it:
        # the aim holds for the deadline (when the packet had to be here), not for when it
        # is heard, or the queue would eat the margin (a clean call concealed 4-5 frames
        # of 3,200, each packet 0-3 ms after its turn, with 5-15 ms queued). A frame is
        # taken out at a playback block (tick_ns), so the deadline moves in whole blocks:
        # the least delay is the deadline moved by as many whole blocks as keep it at the
        # aim or above (with STEP_GUARD_NS to spare for a step down), with nothing queued.
        tick = self.tick_ns
        if deadline < aim:
            steps = (deadline - aim) // tick  # negative: blocks to add
        else:
            steps = max(0, (deadline - aim - STEP_GUARD_NS) // tick)
        queue = playout - deadline
        over = playout - aim  # how much more is held than the aim, all told
        self._aim, self._last_playout = aim, playout
        if over <= self.urgent_ns:
            self._urgent_since = None
        elif self._urgent_since is None:
            self._urgent_since = now
        settling = self._raised_at is not None and now - self._raised_at < self.settle_ns
        # Close enough: every change of delay is heard (and costs PESQ). How close is
        # close enough grows with the path's jitter (the target above the fastest packet):
        # on a jittery path the target wanders, and following it both ways costs more than
        # it saves (bench/playout_sim.py); a clean one is held tight.
        spread = target - self._fastest()
        if len(self.history.delays) < self.early_samples:
            spread = self.max_hysteresis_ns  # the target is still being learnt
        slack = min(self.max_hysteresis_ns, max(self.hysteresis_ns, spread))
        if deadline < aim:
            excess = queue + steps * tick  # below 0: lengthen, by whole blocks
        elif over <= slack:
            # Close enough; but the queue above the deadline is no margin for anything,
            # and goes once it is more than queue_slack_ns (in a pause: free).
            if queue <= self.queue_slack_ns:
                return
            excess = queue
        else:
            excess = queue + steps * tick  # what can go with the deadline kept
            if not excess:
                return
        if 0 < excess <= self.urgent_ns and settling:
            return  # the delay just had to grow: hold it a while before taking it back
        self.stretch_wanted = -excess * SAMPLE_RATE // 1_000_000_000
        # In speech only when far too much has been held for urgent_wait_ns; otherwise the
        # next pause takes the change (pipeline/core/timestretch.py: a cut inside an
        # utterance costs far more than one in a pause). Lengthening never goes into
        # speech: a packet that would be late is waited for when it is due (the
        # concealment stands in), which costs less than a stretched vowel
        # (bench/playout_sim.py: PESQ 3.21 -> 3.39 at 30 ms jitter).
        self.stretch_urgent = (
            self._urgent_since is not None and now - self._urgent_since >= self.urgent_wait_ns
        )

    def stretched(self, samples: int) -> None:
        """The decoder's side changed the audio by ``samples`` (+ inserted, - removed)."""
        if samples > 0:
            self._raised_at = self._now
            self._stats.expanded_ms += samples * 1000 / SAMPLE_RATE
        else:
            self._stats.accelerated_ms -= samples * 1000 / SAMPLE_RATE

    def _catch_up(self, now: int) -> None:
        keep = self.watermark
        if self.adaptive:
            # The time-stretcher takes back a few percent a second; a backlog far beyond
            # that (a path that stalled for seconds, then delivered at once) is cut.
            target = self.history.target_d
            aim = 0 if target is None else self._aim_for(target) - self._fastest()
            keep = max(1, -(-aim // FRAME_NS))
            if (len(self._heap) - keep) * FRAME_NS <= self.backlog_ns:
                self._deep_since = None
                return
        elif len(self._heap) <= self.watermark + self.catchup_slack:
            self._deep_since = None
            return
        if self._deep_since is None:
            self._deep_since = now
            return
        if now - self._deep_since < self.catchup_after_ns:
            return
        self._deep_since = None
        while len(self._heap) > keep:
            self._discard_oldest()

    def _discard_oldest(self) -> None:
        """Drop the oldest held packet to cut the delay, counted discarded, not lost."""
        ext = heapq.heappop(self._heap)
        ts, _payload = self._held.pop(ext)
        self._copies.discard(ext)
        self._consume(ext)
        # As if it had played: the next Frame is no gap (no loss), and the restart check
        # expects timestamps from here on.
        self._last_frame = (ext, ts)
        self._stats.discarded += 1

    def _consume(self, e: int) -> None:
        self._last_out = e
        self._next = e + 1
        self._hole_waits = 0

    def _play(self, e: int, now: int, queued: int = 0) -> Frame:
        heapq.heappop(self._heap)  # e is the smallest held: everything older was consumed
        ts, payload = self._held.pop(e)
        self._stats.waited += self._hole_waits  # ticks it was waited for in a hole
        self._consume(e)
        self._underruns = 0
        self._gap_run = 0
        if self._pending_waits:
            self._stats.waited += self._pending_waits
            self._pending_waits = 0
        end = e in self._ends
        self._ends.discard(e)
        self._spurt_over = end
        if e in self._copies:
            # A copy: the primary was lost all the same (the next primary Frame counts the
            # gap), and a copy's timestamp is the sender's arithmetic, not a measurement.
            self._copies.discard(e)
            self._stats.recovered_red += 1
            return Frame(e & MASK, ts, payload, redundant=True)
        if self.adaptive:
            self._steer(now, queued, ts)
        lost = 0
        if self._last_frame is not None:
            gap = e - self._last_frame[0] - 1
            if gap <= self.max_depth:  # longer: a discontinuity, not loss
                lost = gap
        self._last_frame = (e, ts)
        self._stats.played += 1
        self._stats.lost += lost
        self._window.append((now, 1, lost))
        self._win_played += 1
        self._win_lost += lost
        self._win_runs += lost > 0
        self._prune(now)
        # Told as the end (ramped out by the decoder side) only if silence follows here:
        # with the next spurt already held, audio follows at once.
        return Frame(e & MASK, ts, payload, end=end and e + 1 not in self._held)

    def _prune(self, now: int) -> None:
        while self._window and now - self._window[0][0] > LOSS_WINDOW_NS:
            _, p, lost = self._window.popleft()
            self._win_played -= p
            self._win_lost -= lost
            self._win_runs -= lost > 0
        while self._late_times and now - self._late_times[0] > LOSS_WINDOW_NS:
            self._late_times.popleft()

    # --- state ---

    @property
    def retired(self) -> bool:
        """No packet for retire_after_ns (as of the last push/pop): drop this speaker."""
        if self._last_arrival is None or self._now is None:
            return False
        return self._now - self._last_arrival > self.retire_after_ns

    @property
    def depth(self) -> int:
        return len(self._heap)

    @property
    def next_held(self) -> bool:
        """Whether the packet for the next tick is here: shortening the audio takes it
        sooner, and one not here yet would be a concealment."""
        return self._playing and self._next in self._held

    @property
    def restarts(self) -> int:
        """New streams begun (sequence restarts, and returns after retirement)."""
        return self._stats.restarts

    @property
    def stats(self) -> JitterStats:
        """A snapshot of the counters (loss over the 10 s before the last push/pop)."""
        if self._now is not None:
            self._prune(self._now)
        s = self._stats
        total = self._win_played + self._win_lost
        return JitterStats(
            depth=len(self._heap),
            played=s.played,
            concealed=s.concealed,
            recovered=s.recovered,
            recovered_red=s.recovered_red,
            late=s.late,
            duplicate=s.duplicate,
            overflow=s.overflow,
            lost=s.lost,
            loss_percent=100.0 * self._win_lost / total if total else 0.0,
            late_percent=min(100.0, 100.0 * len(self._late_times) / total) if total else 0.0,
            burst_mean=self._win_lost / self._win_runs if self._win_runs else 0.0,
            restarts=s.restarts,
            underruns=s.underruns,
            spurt_ends=s.spurt_ends,
            discarded=s.discarded,
            target_ms=0.0 if self._aim is None else (self._aim - self._fastest()) / 1e6,
            delay_ms=0.0 if self._aim is None else (self._last_playout - self._fastest()) / 1e6,
            accelerated_ms=s.accelerated_ms,
            expanded_ms=s.expanded_ms,
            waited=s.waited,
            steps=s.steps,
        )
