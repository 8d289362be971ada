"""When the decode stage makes the next playback frame: just in time for the sink, sans-I/O.

A frame mixed as soon as the sink takes the one before waits a whole frame (20 ms) in
the playback queue; two queued frames, the old default, cost 40 ms of mouth-to-ear.
The sink says when it will next want a frame (``Ring.set_due``: a clocked file sink
knows its next tick, a sound device the callback that will finish the frame it holds),
and the decode stage makes each frame ``lead`` before it is due:

    render at  due + pending x 20 ms - lead

``pending`` is the number of frames already made and not yet taken, so the same time
comes out whether or not the sink has taken the frame before: a sink a little late
does not make the stage render twice. ``lead`` is learnt, not set: it is what this
machine's scheduling needs, measured on every frame as how long after its planned
time the frame was ready (the stage's own wake-up lateness under load, plus the mix
and any time-stretching), the most of that over the last LEAD_WINDOW_NS, plus
SAFETY_NS; until a whole window has been seen, no less than LEAD_START_NS (a stage that
learnt its lead from its first few blocks had it at the least, 3 ms, and the next
stall of a loaded machine left holes in the first second played). A frame the sink
wanted and did not find (``Ring.starved``: the one
lateness the stage cannot see itself, e.g. a sound device's callback that came early)
adds STARVE_BOOST_NS for STARVE_HOLD_NS. Between LEAD_MIN_NS and LEAD_MAX_NS (three
frames: past that, the machine is too loaded for any queue this short).

A sink that has not said when it wants a frame, or that has fallen more than a 20 ms
frame behind what it said (stopped, or its stream lost), gets :data:`STALLED_AHEAD_NS`
of frames ahead (at least one) and no more, as a short queue would: nothing piles up
behind a sink that is not taking frames (one that stops just after saying gets the
frames planned before it fell behind). That much covers the stage's next look
(:data:`WAIT_STALLED_NS`) and the lead it starts with: with blocks of a quarter frame,
one block ahead of a sink that just started was gone before the stage looked again.
A sink caught between taking a frame and saying when it wants the next (a
new ``taken`` with the old due) is looked at again :data:`MID_TAKE_NS` later: planned
from the old due, the next frame would be made a frame early, and its "lateness" would
raise the lead for nothing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from pipeline.media.audio_format import FRAME_NS

LEAD_MIN_NS = 3_000_000  # never closer to the sink's deadline than this
LEAD_START_NS = 10_000_000  # the least until a whole window (10 s) has been seen
LEAD_MAX_NS = 3 * FRAME_NS
SAFETY_NS = 2_000_000  # on top of the worst lateness seen
LEAD_WINDOW_NS = 10_000_000_000  # over which the worst lateness is kept
STARVE_BOOST_NS = 5_000_000  # added for each frame the sink did not find in time
STARVE_HOLD_NS = 60_000_000_000  # for this long after it
WAIT_STALLED_NS = 5_000_000  # how often to look again at a sink that is not taking frames
MID_TAKE_NS = 500_000  # how soon to look again at a sink caught between its two stores
MID_TAKE_MAX_NS = 2_000_000  # and for how long (a sink that died there is then a stall)
STALL_BEHIND_NS = FRAME_NS  # a sink this far behind its own deadline is stalled
STALLED_AHEAD_NS = WAIT_STALLED_NS + LEAD_START_NS  # made ahead of a stalled sink, at most


@dataclass(slots=True)
class PacerStats:
    lead_ms: float = 0.0  # how long before the sink's deadline frames are made
    worst_late_ms: float = 0.0  # the most a frame was ready after its plan, last 10 s
    starved: int = 0  # frames the sink wanted and did not find (its own count)
    stalled: int = 0  # times the sink was found behind its own deadline


class Pacer:
    """The render schedule of one playback ring; all times are monotonic ns."""

    def __init__(self, frame_ns: int = FRAME_NS) -> None:
        self.frame_ns = frame_ns  # what the ring carries: a block of the sink's
        self._window = max(1, LEAD_WINDOW_NS // frame_ns)  # frames in LEAD_WINDOW_NS
        self._stalled_ahead = max(1, -(-STALLED_AHEAD_NS // frame_ns))  # frames
        self.lead_ns = LEAD_START_NS
        self._late: deque[tuple[int, int]] = deque()  # (frame no., lateness), max-monotone
        self._frames = 0
        self._boosts: deque[int] = deque()  # when each starve boost ends
        self._starved_seen = -1  # the sink's count when last looked at (-1: not yet)
        self._stalled_before = False
        self._seen: tuple[int, int] | None = None  # (taken, due) at the last look
        self._mid_since: int | None = None  # when a new taken with an old due was seen
        self.stats = PacerStats(lead_ms=self.lead_ns / 1e6)

    def render_at(self, now: int, pending: int, due: int, taken: int | None = None) -> int | None:
        """When to make the next frame (``<= now``: now), or None for "not while the
        sink takes none": look again in :data:`WAIT_STALLED_NS`.

        ``pending``: frames made and not yet taken; ``due``: when the sink next wants
        one (0: it has not said); ``taken``: the sink's count of frames taken, if known
        (``Ring.due_and_pending``), to tell a sink between its two stores."""
        if taken is not None:
            seen, self._seen = self._seen, (taken, due)
            if seen is not None and due and taken != seen[0] and due == seen[1]:
                if self._mid_since is None:
                    self._mid_since = now
                if now - self._mid_since < MID_TAKE_MAX_NS:
                    self._seen = seen  # still the old pair: compare with it next time
                    return now + MID_TAKE_NS
            self._mid_since = None
        stalled = due == 0 or due < now - STALL_BEHIND_NS
        if stalled:
            if due and not self._stalled_before:
                self.stats.stalled += 1
            self._stalled_before = bool(due)
            return now if pending < self._stalled_ahead else None
        self._stalled_before = False
        if pending * self.frame_ns >= LEAD_MAX_NS:  # a late sink with the most queued
            return None
        return due + pending * self.frame_ns - self.lead_ns

    def rendered(self, planned: int, ready: int) -> None:
        """A frame planned for ``planned`` (what :meth:`render_at` said, or when the
        stage could first have made it) was in the ring at ``ready``."""
        late = max(0, ready - planned)
        self._frames += 1
        n = self._frames
        window = self._late
        while window and window[-1][1] <= late:
            window.pop()
        window.append((n, late))
        while window[0][0] <= n - self._window:
            window.popleft()
        self._relead(ready)

    def sink_starved(self, count: int, now: int) -> None:
        """The sink's own count of frames it did not find (``Ring.starved``). Called on
        every look (each arrival too): the lead is worked out again only when the count
        rose or a boost ran out."""
        seen, self._starved_seen = self._starved_seen, count
        expired = bool(self._boosts) and self._boosts[0] <= now
        if count == seen and not expired:
            return
        self.stats.starved = count
        if seen >= 0 and count > seen:
            for _ in range(min(count - seen, 4)):
                self._boosts.append(now + STARVE_HOLD_NS)
        self._relead(now)

    def _relead(self, now: int) -> None:
        while self._boosts and self._boosts[0] <= now:
            self._boosts.popleft()
        worst = self._late[0][1] if self._late else 0
        lead = worst + SAFETY_NS
        if self._frames < self._window:  # a few frames' worst says little: not below the start
            lead = max(lead, LEAD_START_NS)
        lead += len(self._boosts) * STARVE_BOOST_NS
        self.lead_ns = min(LEAD_MAX_NS, max(LEAD_MIN_NS, lead))
        self.stats.lead_ms = self.lead_ns / 1e6
        self.stats.worst_late_ms = worst / 1e6
