"""Redundancy for bursts of loss, sans-I/O: how many earlier frames each packet carries
again (SPEC.md, "Voice body" and "Redundancy"), and the bodies that carry them.

Opus in-band FEC rebuilds only the frame just before a packet that arrived: a burst of
two or more lost packets defeats it. So a sender whose listeners lose packets in bursts
also puts lower-bitrate copies of its last ``depth`` frames into each voice body
(RFC 2198 in spirit), and a listener that lost a packet plays its copy from a later one.

* :func:`wanted_depth` maps what is known of the loss (a loss percentage and the mean
  length of the runs of consecutive lost packets, as listeners report it) to a depth:
  0 below ``MIN_LOSS`` %; 2 when losses come in bursts (mean run ``BURSTY`` or more);
  otherwise (independent losses) 0 when in-band FEC is on, since a copy of the one frame
  before would rebuild what FEC rebuilds already, and 1 when it is off.
* :class:`RedundancyPolicy` holds the depth: it rises at once, and falls only once the
  lower depth has been wanted for ``DOWN_HOLD`` seconds (the listeners' figures move
  every report; the depth should not flap with them).
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
from collections.abc import Iterable
from dataclasses import dataclass, field

from relay.protocol.voice_body import BLOCK, FLAGS_SIZE, MAX_BODY, Redundant, VoiceBody

MAX_DEPTH = 2  # copies per packet at most (the body could hold 3)
REDUNDANT_BITRATE = 16000  # bits/s of the copies' encoder (SPEC.md, "Redundancy")
REDUNDANT_COMPLEXITY = 5  # the copies' encoder spends less CPU than the primary's (9)
MIN_LOSS = 2.0  # loss % below which no copies are sent
BURSTY = 1.4  # mean run of lost packets from which losses count as bursts
DOWN_HOLD = 10.0  # seconds a lower depth must be wanted before the depth falls


def wanted_depth(loss_percent: float, burst_mean: float, fec: bool = True) -> int:
    """The copies a loss pattern asks for: ``burst_mean`` is the mean number of packets
    in a run of consecutive losses (0 or 1: losses one at a time)."""
    if not loss_percent >= MIN_LOSS:  # NaN too
        return 0
    if burst_mean >= BURSTY:
        return MAX_DEPTH
    return 0 if fec else 1


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
        elif now - self._lower_since >= DOWN_HOLD:
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

    max_depth: int = MAX_DEPTH
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
        depth: int = 0,
        marker: bool = False,
    ) -> bytes:
        """The voice body for frame ``seq``: ``primary`` and up to ``depth`` copies of the
        frames before it; then ``copy`` (this frame at the copies' bitrate, None when no
        copies are being made) is kept for the packets after it."""
        if marker or not depth or (self._last and self._last[-1][0] != seq - 1):
            self._last.clear()  # nothing before it belongs to this run of frames
        room = MAX_BODY - FLAGS_SIZE - len(primary)
        chosen: list[Redundant] = []
        for old_seq, old in reversed(self._last):  # newest first: the likeliest to help
            back = seq - old_seq
            if back > depth:
                break
            cost = BLOCK.size + len(old)
            if cost > room:
                self.counters.left_out += 1
                break
            room -= cost
            chosen.append(Redundant(back, old))
        chosen.reverse()  # oldest first on the wire
        for r in chosen:
            self.counters.copies += 1
            self.counters.copy_bytes += BLOCK.size + len(r.opus)
        if copy is not None and depth:
            self._last.append((seq, copy))
            while len(self._last) > self.max_depth:
                self._last.popleft()
        return bytes(VoiceBody(primary, marker, tuple(chosen)))
