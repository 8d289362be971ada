"""How well the UDP path to the relay works, and which path voice takes, sans-I/O.

The network stage pings the relay over UDP twice a second (register pings); each
answer gives a round-trip time. From those alone this decides, continuously:

* the UDP round trip (the latest, and smoothed as TCP smooths its RTT) and the loss
  of pings over the last 10 s, both ways together;
* the voice path (SPEC.md, "TCP tunnel"): UDP while pings are answered; the TCP tunnel
  once no answer came for ``DEAD_NS`` (a path that died either way, or never worked);
  UDP again once answers have come without a gap for ``RECOVER_NS``. A ping lost now and
  then (a gap under ``DEAD_NS``) changes nothing.

Mumble falls back to TCP only when UDP never worked in the first 20 s; this falls back
whenever the path stops, and comes back when it mends. Times are monotonic ns.
"""

from __future__ import annotations

from collections import deque

UDP = "udp"
TCP = "tcp"
MODES = ("auto", UDP, TCP)  # auto: as measured; udp / tcp: always that path
DEAD_NS = 1_500_000_000  # three pings unanswered in a row: UDP is dead (either way)
RECOVER_NS = 2_000_000_000  # answers for this long without a gap: UDP is back
GAP_NS = 1_000_000_000  # answers further apart than this are not "without a gap"
LOSS_WINDOW_NS = 10_000_000_000  # the pings the loss figure is over
ANSWER_GRACE_NS = 1_000_000_000  # a ping younger than this may still be answered


class UdpHealth:
    """The UDP path's round trip, loss and the voice path chosen from them."""

    def __init__(self, mode: str = "auto") -> None:
        if mode not in MODES:
            raise ValueError(f"voice path {mode!r} is not one of {', '.join(MODES)}")
        self.mode = mode
        self.path = TCP if mode == TCP else UDP
        self.rtt_ns: int | None = None  # the latest answer's
        self.srtt_ns: float | None = None  # smoothed (RFC 6298's alpha of 1/8)
        self.switches = 0  # changes of path so far
        self._since: int | None = None  # when pinging started (no answer before: none yet)
        self._last_answer: int | None = None
        self._run_start: int | None = None  # first answer of the current gapless run
        self._sent: deque[int] = deque()  # send times of the pings in the loss window
        self._answered: deque[int] = deque()  # send times of those answered

    def start(self, now: int) -> None:
        """Pinging starts (a session): from now, no answer for DEAD_NS means a dead path."""
        if self._since is None:
            self._since = now

    def restart(self, now: int) -> None:
        """A new session (perhaps a restarted relay): answers to the old one's pings say
        nothing of it. The path stays as it is until the new one's answers (or none) say."""
        self._since = now
        self._last_answer = self._run_start = None

    def sent(self, now: int) -> None:
        """A ping left for the relay."""
        self.start(now)
        self._sent.append(now)
        self._trim(now)

    def answered(self, now: int, rtt_ns: int) -> None:
        """A ping's answer came back (authenticated), ``rtt_ns`` after it was sent."""
        self.rtt_ns = rtt_ns
        self.srtt_ns = (
            rtt_ns if self.srtt_ns is None else self.srtt_ns + (rtt_ns - self.srtt_ns) / 8
        )
        last = self._last_answer
        if last is None or now - last > GAP_NS or self._run_start is None:
            self._run_start = now
        self._last_answer = now
        self._answered.append(now - rtt_ns)
        self._trim(now)

    def _trim(self, now: int) -> None:
        horizon = now - LOSS_WINDOW_NS - ANSWER_GRACE_NS
        for q in (self._sent, self._answered):
            while q and q[0] < horizon:
                q.popleft()

    def update(self, now: int) -> bool:
        """Choose the path for ``now``; True if it changed."""
        if self.mode != "auto":
            return False
        want = self.path
        last = self._last_answer
        if self.path == UDP:
            quiet_from = last if last is not None else self._since
            if quiet_from is not None and now - quiet_from >= DEAD_NS:
                want = TCP
        elif (
            last is not None
            and self._run_start is not None
            and now - last <= GAP_NS
            and now - self._run_start >= RECOVER_NS
        ):
            want = UDP
        if want == self.path:
            return False
        self.path = want
        self.switches += 1
        return True

    def next_check(self, now: int) -> int:
        """When :meth:`update` may next change its mind (at the latest)."""
        if self.mode != "auto" or self._since is None:
            return now + DEAD_NS
        if self.path == UDP:
            quiet_from = self._last_answer if self._last_answer is not None else self._since
            return max(now, quiet_from + DEAD_NS)
        last, run = self._last_answer, self._run_start
        if last is not None and run is not None and now - last <= GAP_NS:
            return max(now, run + RECOVER_NS)  # a gapless run under way
        # No run under way (answers stopped, or never came): only an answer, which wakes
        # the caller anyway, can start one. Not ``now``: a caller would wait for nothing.
        return now + GAP_NS

    def loss_percent(self, now: int) -> float | None:
        """The share of the pings sent in the last 10 s (those old enough to have been
        answered) that got no answer; None before any such ping."""
        end = now - ANSWER_GRACE_NS
        start = end - LOSS_WINDOW_NS
        sent = sum(1 for t in self._sent if start < t <= end)
        if not sent:
            return None
        answered = sum(1 for t in self._answered if start < t <= end)
        return max(0.0, 100.0 * (sent - answered) / sent)
