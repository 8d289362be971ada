"""Redundancy for bursts of loss, sans-I/O: how many earlier frames each packet carries
again (SPEC.md, "Voice body" and "Redundancy"), and the bodies that carry them.

Opus in-band FEC rebuilds only the frame just before a packet that arrived: a burst of
two or more lost packets defeats it. So a sender whose listeners lose packets in bursts
also puts lower-bitrate copies of ``depth`` earlier frames into each voice body
(RFC 2198 in spirit), and a listener that lost a packet plays its copy from a later one.

* :func:`wanted_depth` maps what is known of the loss (a loss percentage and the mean
  length of the runs of consecutive lost packets, as listeners report it) to a depth:
  0 below ``MIN_LOSS`` % or while losses come one at a time (mean run under
  ``SOME_BURSTS``: in-band FEC rebuilds those), 1 for short bursts, 2 from a mean run of
  ``BURSTY``, 3 from ``VERY_BURSTY`` under ``HEAVY_LOSS`` % or more; without FEC, one
  copy more for each (and 1 for single losses).
* :func:`backs_for` says which frames the copies are of: every second frame, from two
  back with in-band FEC on (the frame just before a packet is rebuilt from that
  packet's FEC already), from one back without, and a third copy four frames further:
  (2, 4, 8). Copies of every second frame let two packets in a row rebuild a burst
  twice as long as one packet's copies reach: after a burst ending at frame j-1, packet
  j carries j-2 and j-4, packet j+1 carries j-1 and j-3, and FEC in packet j rebuilds
  j-1, so depth 2 = (2, 4) rebuilds four lost frames where (2, 3) rebuilt three, in the
  same bytes; with the third copy 8 back, the four packets after any burst of up to 8
  rebuild all of it. Measured in memory (``python -m bench.quality --only red-backs``:
  the real sender, bodies, adaptive playout and decoder, 3 seeds, copies at 12 kbit/s,
  the passes after the first): 10 % loss in bursts of 3, PESQ 2.78 with (2, 3), 3.08
  with (2, 4), 3.09 with (2, 3, 4), 3.34 with (2, 4, 6), 3.55 with (2, 4, 8), 3.54
  with (2, 5, 9), 3.57 with (2, 4, 10) (playout targets 66 / 86 / 86 / 126 / 166 / 186
  / 206 ms): (2, 4, 8) takes most of what reaching further buys (SPEC.md, "Redundancy
  for bursts of loss").
* :class:`RedundancyPolicy` holds the depth: it rises at once, and falls only once the
  lower depth has been wanted for ``DEPTH_HOLD`` seconds, or none for ``DOWN_HOLD`` (the
  listeners' figures move every report; the depth should not flap with them).
* :class:`RedundantFrames` keeps the copies of the last frames and packs each body: the
  primary, then as many copies as the depth asks for and the 1,275-byte body allows
  (the oldest is left out first), none across a gap in the sequence numbers or a talk
  spurt's start (a copy must be of the frame ``back`` packets before, captured
  ``back`` frames earlier).

The copies come from a second encoder at ``REDUNDANT_BITRATE`` (an Opus packet cannot be
cut down to a lower bitrate after the fact); why that rate is in SPEC.md, from
``python -m bench.quality --only redundancy``. Times are monotonic seconds, passed in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from relay.protocol.voice_body import BLOCK, FLAGS_SIZE, MAX_BODY, Redundant, VoiceBody

MAX_DEPTH = 3  # copies per packet at most (the most the body's flags can count)
BACK_STEP = 2  # the first two copies are of every second frame
FAR_STEP = 4  # the third goes this much further back than the second
MAX_BACK = 2 + BACK_STEP + FAR_STEP  # frames back a copy may go: 8 with FEC on
REDUNDANT_BITRATE = 12000  # bits/s of the copies' encoder (SPEC.md, "Redundancy")
REDUNDANT_COMPLEXITY = 5  # the copies' encoder spends less CPU than the primary's (9)
MIN_LOSS = 2.0  # loss % below which no copies are sent
SOME_BURSTS = 1.25  # mean run of lost packets from which one copy is sent
BURSTY = 1.75  # and from which two
VERY_BURSTY = 2.5  # and from which three, under
HEAVY_LOSS = 8.0  # this much loss % or more (at 5 %, bursts of 3, a third copy measured no better)
DOWN_HOLD = 10.0  # seconds no copies must be wanted before they stop
# And before the depth falls to fewer copies (not none): the listeners' figures are of the
# last 10 s, and under 10 % loss in bursts of 3 their loss and mean burst wander either
# side of HEAVY_LOSS and VERY_BURSTY; each fall and rise moves every listener's playout
# delay by the frames the deepest copy reaches (a call, in bench.quality: 60 -> 131 ->
# 186 -> 131 ms within 40 s at a 10 s hold).
DEPTH_HOLD = 30.0
COPIES_FEC_HINT = 2.0  # the encoder's loss hint at most, while copies are sent


def fec_hint(hint: float, depth: int) -> float:
    """The loss % to tell the encoder while ``depth`` copies are sent: at most
    ``COPIES_FEC_HINT``. In-band FEC takes bits from the primary in proportion to the
    hint, and with copies it is rarely what rebuilds a frame (the copy 2 back in the next
    packet rebuilds the same one, and the buffer holds for it). Measured in memory (3
    seeds, 12 kbit/s copies): 10 % loss in bursts of 3 with (2, 4, 6), PESQ 3.06 at a
    hint of 10, 3.14 at 5, 3.16 at 2; in bursts of 2 with (2, 4), 3.17, 3.25, 3.28."""
    return min(hint, COPIES_FEC_HINT) if depth > 0 else hint


def wanted_depth(loss_percent: float, burst_mean: float, fec: bool = True) -> int:
    """The copies a loss pattern asks for: ``burst_mean`` is the mean number of packets
    in a run of consecutive losses (0 or 1: losses one at a time)."""
    if not loss_percent >= MIN_LOSS:  # NaN too
        return 0
    if burst_mean >= VERY_BURSTY and loss_percent >= HEAVY_LOSS:
        depth = 3
    else:
        depth = 2 if burst_mean >= BURSTY else 1 if burst_mean >= SOME_BURSTS else 0
    return depth if fec else min(MAX_DEPTH, depth + 1)


def backs_for(depth: int, fec: bool = True) -> tuple[int, ...]:
    """How many packets back each of ``depth`` copies goes: every second frame, from 2
    with FEC on (FEC rebuilds 1 back), from 1 without; a third copy goes four frames
    further than the second: (2, 4, 8), or (1, 3, 7) without FEC."""
    first = 2 if fec else 1
    backs = (first, first + BACK_STEP, first + BACK_STEP + FAR_STEP)
    return backs[: max(0, min(depth, MAX_DEPTH))]


@dataclass(slots=True)
class RedundancyPolicy:
    """The depth to send at, from the loss figures known at each update."""

    fec: bool = True
    enabled: bool = True
    depth: int = 0
    _lower_since: float | None = None

    def update(self, figures: Iterable[tuple[float, float]], now: float) -> int:
        """``figures``: (loss %, mean burst) from each source (our listeners' reports, what
        we measure on the streams we receive); the largest depth any asks for counts."""
        want = max((wanted_depth(loss, burst, self.fec) for loss, burst in figures), default=0)
        if not self.enabled:
            want = 0
        if want >= self.depth:
            self.depth, self._lower_since = want, None
        elif self._lower_since is None:
            self._lower_since = now
        elif now - self._lower_since >= (DEPTH_HOLD if want else DOWN_HOLD):
            self.depth, self._lower_since = want, None
        return self.depth


@dataclass(slots=True)
class RedundancyCounters:
    copies: int = 0  # redundant copies sent
    copy_bytes: int = 0  # their bytes and their block headers: the cost of redundancy
    left_out: int = 0  # copies that did not fit a body


@dataclass(slots=True)
class RedundantFrames:
    """The copies of the last frames sent, and the voice bodies that carry them."""

    max_back: int = MAX_BACK
    counters: RedundancyCounters = field(default_factory=RedundancyCounters)
    _last: deque[tuple[int, bytes]] = field(default_factory=deque)  # (seq, copy), oldest first

    def reset(self) -> None:
        """Forget the copies: the next frame is not contiguous with the last one (a mute,
        a new talk spurt)."""
        self._last.clear()

    def body(
        self,
        seq: int,
        primary: bytes,
        copy: bytes | None = None,
        backs: Sequence[int] = (),
        marker: bool = False,
        end: bool = False,
    ) -> bytes:
        """The voice body for frame ``seq``: ``primary`` and the copies of the frames
        ``backs`` packets before it (those kept and that fit); then ``copy`` (this frame
        at the copies' bitrate, None when no copies are being made) is kept for the
        packets after it."""
        if marker or not backs or (self._last and self._last[-1][0] != seq - 1):
            self._last.clear()  # nothing before it belongs to this run of frames
        kept = dict(self._last)
        room = MAX_BODY - FLAGS_SIZE - len(primary)
        chosen: list[Redundant] = []
        for back in sorted(backs):  # nearest first: the likeliest to be needed
            old = kept.get(seq - back)
            if old is None:
                continue
            cost = BLOCK.size + len(old)
            if cost > room:
                self.counters.left_out += 1
                continue
            room -= cost
            chosen.append(Redundant(back, old))
        chosen.reverse()  # oldest first on the wire
        for r in chosen:
            self.counters.copies += 1
            self.counters.copy_bytes += BLOCK.size + len(r.opus)
        if copy is not None and backs:
            self._last.append((seq, copy))
            while len(self._last) > self.max_back:
                self._last.popleft()
        return bytes(VoiceBody(primary, marker, tuple(chosen), end))
