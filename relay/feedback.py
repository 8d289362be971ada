"""Loss feedback, sans-I/O: what each speaker's current listeners receive of it (SPEC.md).

Listeners send ``reception`` reports (per speaker they hear: loss and late share over
their last 10 s); this object keeps, per speaker, the latest entry of each listener,
and once a second (:meth:`LossFeedback.tick`) says which speakers to send a
``receiver_report`` with the worst of them. An entry counts while it is fresh
(``ttl`` after its report) and while its listener is in the speaker's channel;
``channel_of`` (the session table's view, passed in) answers that at every tick, so
a listener that leaves the channel or the relay stops counting without being told
here, and its entries are dropped at that tick.

Memory is bounded by the reports themselves: an entry is kept only for a speaker in
the reporter's channel, each report holds at most ``MAX_RECEPTION`` entries, and a
listener has at most one entry per speaker.

No sockets, no clock, no logging: every method takes the time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from relay.protocol.messages import MAX_LISTENERS, ReceiverReport, SpeakerReception

REPORT_TTL = 5.0  # seconds a listener's entry counts after its report (listeners send every 2)
RESEND = 5.0  # seconds after which a speaker with listeners hears from us again, news or not
STEP = 1.0  # percentage points of change in the worst loss or late share that are news
TICK = 1.0  # seconds between two looks at every speaker: at most one report a second each


@dataclass(slots=True, frozen=True)
class _Entry:
    loss: float
    late: float
    at: float  # when the listener reported it


@dataclass(slots=True, frozen=True)
class _Sent:
    loss: float
    late: float
    listeners: int
    at: float


@dataclass(slots=True)
class FeedbackCounters:
    reports: int = 0  # reception messages taken
    entries_ignored: int = 0  # about oneself, or a speaker not in the reporter's channel
    receiver_reports: int = 0  # receiver_report messages asked for


class LossFeedback:
    """Per speaker, its listeners' latest entries; decides what each speaker is told."""

    def __init__(
        self,
        channel_of: Callable[[int], str | None],
        ttl: float = REPORT_TTL,
        resend: float = RESEND,
        step: float = STEP,
    ) -> None:
        """``channel_of(user_id)``: the channel that user is in now, None if no such session."""
        self.channel_of = channel_of
        self.ttl, self.resend, self.step = ttl, resend, step
        self.counters = FeedbackCounters()
        self._entries: dict[int, dict[int, _Entry]] = {}  # speaker -> listener -> entry
        self._sent: dict[int, _Sent] = {}  # speaker -> what it was last told

    def __bool__(self) -> bool:
        """Whether :meth:`tick` has anything to look at (the adapter's timer runs while so)."""
        return bool(self._entries or self._sent)

    def report(self, listener: int, reports: Iterable[SpeakerReception], now: float) -> None:
        """``listener`` sent a ``reception`` at ``now``: keep its entries that can count."""
        self.counters.reports += 1
        channel = self.channel_of(listener)
        if channel is None:
            return
        for r in reports:
            if r.user_id == listener or self.channel_of(r.user_id) != channel:
                self.counters.entries_ignored += 1
                continue
            self._entries.setdefault(r.user_id, {})[listener] = _Entry(
                r.loss_percent, r.late_percent, now
            )

    def worst(self, speaker: int, now: float) -> tuple[float, float, int]:
        """(worst loss %, worst late %, listeners counted) for ``speaker`` at ``now``;
        entries that no longer count are dropped."""
        listeners = self._entries.get(speaker)
        channel = self.channel_of(speaker)
        if listeners is None:
            return 0.0, 0.0, 0
        if channel is not None:
            gone = [
                who
                for who, e in listeners.items()
                if now - e.at > self.ttl or self.channel_of(who) != channel
            ]
        else:
            gone = list(listeners)
        for who in gone:
            del listeners[who]
        if not listeners:
            del self._entries[speaker]
            return 0.0, 0.0, 0
        loss = max(e.loss for e in listeners.values())
        late = max(e.late for e in listeners.values())
        return loss, late, len(listeners)

    def tick(self, now: float) -> list[tuple[int, ReceiverReport]]:
        """The ``receiver_report`` due to each speaker at ``now``: ``(speaker, message)``."""
        out: list[tuple[int, ReceiverReport]] = []
        for speaker in list(self._entries.keys() | self._sent.keys()):
            loss, late, n = self.worst(speaker, now)
            last = self._sent.get(speaker)
            if n == 0:
                if last is not None:  # nobody counts any more: say so once, then forget it
                    del self._sent[speaker]
                    out.append((speaker, ReceiverReport(0.0, 0.0, 0)))
                continue
            if (
                last is None
                or abs(loss - last.loss) >= self.step
                or abs(late - last.late) >= self.step
                or n != last.listeners
                or now - last.at >= self.resend
            ):
                self._sent[speaker] = _Sent(loss, late, n, now)
                msg = ReceiverReport(round(loss, 1), round(late, 1), min(n, MAX_LISTENERS))
                out.append((speaker, msg))
        self.counters.receiver_reports += len(out)
        return out
