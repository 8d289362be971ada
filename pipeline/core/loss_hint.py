"""The encoder's packet loss hint, sans-I/O: how much in-band FEC a speaker sends.

Opus spends bits on in-band FEC (a low-bitrate copy of the previous frame in each
packet) in proportion to the loss percentage it is told to expect. The hint is the
largest of four figures:

* ``configured``: the loss to expect before anything is measured (a floor);
* ``chaos``: the developer setting that drops our own outgoing packets;
* ``incoming``: the worst loss the decode stage measures on the streams *we* receive
  (our downlink and the speakers' uplinks: a hint that the path is lossy both ways);
* ``listeners``: the worst loss our current listeners report of *our* stream, from
  the relay's ``receiver_report`` (SPEC.md, "Loss feedback"). That one covers the
  case none of the others sees: a listener whose own downlink loses packets.

The listeners' late share is kept and shown but not added: their loss figure counts
every frame that did not play in time, late ones included. The mean burst (the mean
run of consecutive lost packets) of the incoming streams and of the listeners' reports
is kept beside each loss figure, held and dropped with it: :meth:`LossHint.figures`
gives the pairs the redundancy depth is chosen from (pipeline/core/redundancy.py).

The relay repeats its report at least every 5 s while anyone listens, and says
``listeners: 0`` when nobody does any more. If reports stop altogether (our control
connection is down), the last figure is held for ``HOLD`` seconds and then halves
every ``HALF_LIFE`` seconds, so FEC winds down instead of staying up for ever or
vanishing the moment one message is late. Times are monotonic seconds, passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

HOLD = 6.0  # seconds a listeners' figure holds without news (the relay repeats every 5 s)
HALF_LIFE = 2.0  # seconds per halving after that
FLOOR = 0.5  # a decayed figure under this many percent counts as none

CONFIGURED = "configured"
CHAOS = "chaos"
INCOMING = "incoming"
LISTENER = "worst listener"


@dataclass(slots=True)
class LossHint:
    """The loss percentage the encoder should expect, and which figure set it."""

    configured: float = 0.0
    chaos: float = 0.0
    incoming: float = 0.0
    use_listeners: bool = True  # off: listeners' reports are kept for the stats only
    listener_late: float = 0.0  # the worst late share a listener reported (shown, not used)
    listeners: int = 0  # how many listeners the last report counted
    incoming_burst: float = 0.0  # the mean burst of the incoming stream that lost most
    listener_burst: float = 0.0  # the longest mean burst a listener reported
    _listener_loss: float = 0.0
    _listener_at: float = 0.0

    def listener_report(
        self, loss: float, late: float, listeners: int, now: float, burst: float = 0.0
    ) -> None:
        """The relay's ``receiver_report`` arrived at ``now``."""
        self._listener_loss = loss if listeners else 0.0
        self.listener_late = late if listeners else 0.0
        self.listener_burst = burst if listeners else 0.0
        self.listeners = listeners
        self._listener_at = now

    def listener_loss(self, now: float) -> float:
        """The listeners' figure at ``now``: the last report, held, then decaying."""
        waited = now - self._listener_at - HOLD
        if waited <= 0 or self._listener_loss == 0.0:
            return self._listener_loss
        value = self._listener_loss * 0.5 ** (waited / HALF_LIFE)
        return value if value >= FLOOR else 0.0

    def figures(self, now: float) -> list[tuple[float, float]]:
        """``(loss %, mean burst)`` of each measured figure at ``now``: what we receive,
        and (with listeners' reports in use) what our listeners receive of us."""
        out = [(self.incoming, self.incoming_burst)]
        if self.use_listeners:
            out.append((self.listener_loss(now), self.listener_burst))
        return out

    def value(self, now: float) -> tuple[float, str]:
        """``(loss %, source)``: the hint at ``now``, at most 100, and the figure that set it
        (the first of configured, chaos, incoming, worst listener on a tie)."""
        figures = [(self.configured, CONFIGURED), (self.chaos, CHAOS), (self.incoming, INCOMING)]
        if self.use_listeners:
            figures.append((self.listener_loss(now), LISTENER))
        best, source = figures[0]
        for figure, name in figures[1:]:
            if figure > best:
                best, source = figure, name
        return min(100.0, max(0.0, best)), source
