"""Per-speaker jitter buffer with loss concealment decisions, sans-I/O.

The decode stage owns one :class:`JitterBuffer` (and one Opus decoder) per speaker.
It pushes every received packet with ``push(seq, timestamp, payload, now)`` (the
timestamp is the sender's media timestamp, in 48 kHz samples; ``now`` is this
machine's monotonic ns: the two are never mixed) and, once
per 20 ms playback tick, asks ``pop(now)`` what to play:

* :class:`Frame`   - the packet for the next expected sequence number: decode it;
* :class:`Recover` - that packet is missing but the one after it is held: decode the
  missing frame from the next packet's in-band FEC (``OpusDecoder.recover``);
* :class:`Conceal` - missing with nothing to recover from: Opus PLC;
* :class:`Nothing` - buffering (not started, or rebuffering after running dry).

Rules (SPEC.md "Jitter buffer and loss concealment" and issue 4):

* Packets are held in a heap by sequence number; nothing comes out until ``watermark``
  packets are held. Each tick then consumes the next expected sequence number, so
  the sequence numbers of everything returned strictly increase.
* Older than (or equal to) the last sequence number returned: dropped, counted late.
  Already held: dropped, counted duplicate.
* Running dry mid-talk (the speaker paused, or a burst outran the buffer): at most
  ``max_underrun`` concealments with nothing held, then back to buffering.
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
* ``lost`` counts sequence numbers that never played as a Frame between two that did
  (recovered, concealed, skipped or arriving late); ``loss_percent`` is that over the
  last 10 s of played frames: the network loss the encoder's FEC hint wants. A gap
  longer than ``max_depth`` is a discontinuity, not loss, and is not counted.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

from pipeline.core.seqnum import MASK, seq_diff
from pipeline.media.audio_format import FRAME_SAMPLES, SAMPLE_RATE

LOSS_WINDOW_NS = 10_000_000_000


@dataclass(slots=True, frozen=True)
class Frame:
    seq: int
    timestamp: int
    payload: bytes


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
    late: int = 0  # dropped: at or behind what was already returned
    duplicate: int = 0  # dropped: already held
    overflow: int = 0  # dropped: held beyond max_depth
    lost: int = 0  # sequence numbers missing between played Frames
    loss_percent: float = 0.0  # lost / (lost + played) over the last 10 s
    late_percent: float = 0.0  # late arrivals / (lost + played) over the last 10 s
    restarts: int = 0  # sequence restarts and retirements followed by a new stream
    underruns: int = 0  # times the buffer ran dry and went back to buffering
    discarded: int = 0  # held packets dropped to catch up after a backlog built up


class JitterBuffer:
    """One speaker's reordering buffer; time is passed in (ns of monotonic_ns)."""

    def __init__(
        self,
        watermark: int = 2,
        retire_after_ns: int = 2_000_000_000,
        max_depth: int = 50,
        *,
        max_underrun: int = 3,
        max_conceal: int = 5,
        restart_slack: int = 200 * SAMPLE_RATE // 1000,  # 200 ms of media timestamp
        catchup_slack: int = 3,
        catchup_after_ns: int = 1_000_000_000,
    ) -> None:
        if not 1 <= watermark <= max_depth:
            raise ValueError(f"watermark {watermark} must be in 1..max_depth ({max_depth})")
        self.watermark = watermark
        self.retire_after_ns = retire_after_ns
        self.max_depth = max_depth
        self.max_underrun = max_underrun
        self.max_conceal = max_conceal
        self.restart_slack = restart_slack
        self.catchup_slack = catchup_slack
        self.catchup_after_ns = catchup_after_ns
        self._stats = JitterStats()
        # (now, played, lost) per played Frame, for loss_percent over the last 10 s.
        self._window: deque[tuple[int, int, int]] = deque()
        self._win_played = 0
        self._win_lost = 0
        self._late_times: deque[int] = deque()  # arrival of each late packet, last 10 s
        self._now: int | None = None
        self._last_arrival: int | None = None
        self._reset()

    def _reset(self) -> None:
        # Sequence numbers are unwrapped to "ext" Python ints (ext % 2**64 == seq) so the
        # heap orders correctly across the u64 wrap.
        self._heap: list[int] = []
        self._held: dict[int, tuple[int, bytes]] = {}  # ext -> (timestamp, payload)
        self._ref: tuple[int, int] | None = None  # (ext, seq) of the last push
        self._playing = False
        self._next = 0  # ext of the next tick's sequence number, while playing
        self._last_out: int | None = None  # ext of the last thing returned
        self._last_frame: tuple[int, int] | None = None  # (ext, timestamp) of the last Frame
        self._restart: tuple[int, int] | None = None  # (ext, timestamp) that began this stream
        self._underruns = 0
        self._gap_run = 0
        self._deep_since: int | None = None  # when the held count rose above the slack

    # --- input ---

    def push(self, seq: int, timestamp: int, payload: bytes, now: int) -> None:
        """Hand over one received packet."""
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
        if self._last_out is not None and ext <= self._last_out:
            if self._is_restart(ext, timestamp):
                self._stats.restarts += 1
                self._reset()
                self._restart = (seq, timestamp)
                ext = seq
            else:
                self._late(now)
                return
        if ext in self._held:
            self._stats.duplicate += 1
            return
        self._ref = (ext, seq)
        self._held[ext] = (timestamp, bytes(payload))
        heapq.heappush(self._heap, ext)
        while len(self._heap) > self.max_depth:
            self._drop_oldest()

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
        self._stats.overflow += 1
        # Catch up: the dropped number counts as consumed, so it cannot play later.
        self._last_out = ext if self._last_out is None else max(self._last_out, ext)
        if self._playing and self._next <= ext:
            self._next = ext + 1

    # --- output ---

    def pop(self, now: int) -> Output:
        """What to play for this 20 ms tick."""
        self._now = now
        if not self._playing:
            if len(self._heap) < self.watermark:
                return NOTHING
            self._playing = True
            self._next = self._heap[0]
            self._underruns = 0
            self._gap_run = 0
        self._catch_up(now)
        e = self._next
        if e in self._held:
            return self._play(e, now)
        if self._heap:  # a hole with later packets held
            if e + 1 in self._held:
                self._consume(e)
                self._gap_run = 0
                self._stats.recovered += 1
                return Recover(e & MASK, self._held[e + 1][1])
            self._gap_run += 1
            if self._gap_run > self.max_conceal:
                self._next = self._heap[0]
                return self._play(self._next, now)
            self._consume(e)
            self._stats.concealed += 1
            return Conceal(e & MASK)
        # Dry: conceal a little, then buffer again.
        if self._underruns >= self.max_underrun:
            self._playing = False
            self._stats.underruns += 1
            return NOTHING
        self._underruns += 1
        self._consume(e)
        self._stats.concealed += 1
        return Conceal(e & MASK)

    def _catch_up(self, now: int) -> None:
        if len(self._heap) <= self.watermark + self.catchup_slack:
            self._deep_since = None
            return
        if self._deep_since is None:
            self._deep_since = now
            return
        if now - self._deep_since < self.catchup_after_ns:
            return
        self._deep_since = None
        while len(self._heap) > self.watermark:
            ext = heapq.heappop(self._heap)
            ts, _payload = self._held.pop(ext)
            self._consume(ext)
            # As if it had played: the next Frame is no gap (no loss), and the restart
            # check expects timestamps from here on.
            self._last_frame = (ext, ts)
            self._stats.discarded += 1

    def _consume(self, e: int) -> None:
        self._last_out = e
        self._next = e + 1

    def _play(self, e: int, now: int) -> Frame:
        heapq.heappop(self._heap)  # e is the smallest held: everything older was consumed
        ts, payload = self._held.pop(e)
        self._consume(e)
        self._underruns = 0
        self._gap_run = 0
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
        self._prune(now)
        return Frame(e & MASK, ts, payload)

    def _prune(self, now: int) -> None:
        while self._window and now - self._window[0][0] > LOSS_WINDOW_NS:
            _, p, lost = self._window.popleft()
            self._win_played -= p
            self._win_lost -= lost
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
            late=s.late,
            duplicate=s.duplicate,
            overflow=s.overflow,
            lost=s.lost,
            loss_percent=100.0 * self._win_lost / total if total else 0.0,
            late_percent=min(100.0, 100.0 * len(self._late_times) / total) if total else 0.0,
            restarts=s.restarts,
            underruns=s.underruns,
            discarded=s.discarded,
        )
