"""Loss feedback, sans-I/O: what each speaker's current listeners receive of it (SPEC.md).

Listeners send ``reception`` reports (per speaker they hear: loss and late share over
their last 10 s); this object keeps each listener's latest report and once a second
(:meth:`LossFeedback.tick`) says which speakers to send a ``receiver_report`` with the
worst of their listeners. A report counts while it is fresh (``ttl``) and while its
listener is in the channel it reported from; an entry of it counts for a speaker in
that channel. ``channel_of`` (the session table's view, passed in) answers that at
every tick, so a listener that leaves the channel or the relay, or a speaker that
moves, stops counting without being told here.

Memory and work are bounded by the reports: one per listener, at most
``MAX_RECEPTION`` entries each, at most one a second per listener kept.

No sockets, no clock, no logging: every method takes the time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from relay.protocol.messages import MAX_LISTENERS, ReceiverReport, SpeakerReception

REPORT_TTL = 5.0  # seconds a listener's report counts (listeners send every 2)
MIN_INTERVAL = 1.0  # seconds: a listener's reports closer together than this are ignored
RESEND = 5.0  # seconds after which a speaker with listeners hears from us again, news or not
STEP = 1.0  # percentage points of change in the worst loss or late share that are news
BURST_STEP = 0.25  # packets of change in the longest mean loss burst that are news
TICK = 1.0  # seconds between two looks at every speaker: at most one report a second each


@dataclass(slots=True, frozen=True)
class _Report:
    channel: str  # the listener's channel when it reported
    at: float  # when
    entries: dict[int, tuple[float, float, float]]  # speaker -> (loss %, late %, burst)


@dataclass(slots=True, frozen=True)
class _Sent:
    loss: float
    late: float
    listeners: int
    at: float
    burst: float = 0.0


@dataclass(slots=True)
class FeedbackCounters:
    reports: int = 0  # reception messages kept
    reports_ignored: int = 0  # too soon after the listener's last one, or from no session
    receiver_reports: int = 0  # receiver_report messages asked for


_UNSEEN = object()


class LossFeedback:
    """Each listener's latest report; decides what each speaker is told.

    A listener's latest report replaces its previous one whole: a speaker it no
    longer lists (it stopped hearing it) no longer counts from it.
    """

    def __init__(
        self,
        channel_of: Callable[[int], str | None],
        ttl: float = REPORT_TTL,
        resend: float = RESEND,
        step: float = STEP,
        min_interval: float = MIN_INTERVAL,
    ) -> None:
        """``channel_of(user_id)``: the channel that user is in now, None if no such session."""
        self.channel_of = channel_of
        self.ttl, self.resend, self.step, self.min_interval = ttl, resend, step, min_interval
        self.counters = FeedbackCounters()
        self._reports: dict[int, _Report] = {}  # listener -> its latest report
        self._sent: dict[int, _Sent] = {}  # speaker -> what it was last told

    def __bool__(self) -> bool:
        """Whether :meth:`tick` has anything to look at (the adapter's timer runs while so)."""
        return bool(self._reports or self._sent)

    def __len__(self) -> int:
        """Entries held: (listener, speaker) pairs."""
        return sum(len(r.entries) for r in self._reports.values())

    def report(self, listener: int, reports: Iterable[SpeakerReception], now: float) -> None:
        """``listener`` sent a ``reception`` at ``now``: it replaces the listener's last one.

        Ignored from a user with no session, or within ``min_interval`` of the
        listener's last report (a client sends one every 2 s; this bounds what a
        flood of them costs to one a second).
        """
        last = self._reports.get(listener)
        channel = self.channel_of(listener)
        if channel is None or (last is not None and now - last.at < self.min_interval):
            self.counters.reports_ignored += 1
            return
        self.counters.reports += 1
        entries = {r.user_id: (r.loss_percent, r.late_percent, r.burst_mean) for r in reports}
        entries.pop(listener, None)  # our own stream, if a client reports it
        self._reports[listener] = _Report(channel, now, entries)

    def worst(self, now: float) -> dict[int, tuple[float, float, int, float]]:
        """Per speaker: (worst loss %, worst late %, listeners counted, longest mean loss
        burst) at ``now``.

        A report counts while it is fresh and its listener is still in the channel it
        reported from; its entries count for the speakers in that channel. Reports
        that no longer count are dropped.
        """
        channel_of = self.channel_of
        speaker_channel: dict[int, object] = {}
        out: dict[int, tuple[float, float, int, float]] = {}
        for listener, rep in list(self._reports.items()):
            if now - rep.at > self.ttl or channel_of(listener) != rep.channel:
                del self._reports[listener]
                continue
            for speaker, (loss, late, burst) in rep.entries.items():
                where = speaker_channel.get(speaker, _UNSEEN)
                if where is _UNSEEN:
                    where = speaker_channel[speaker] = channel_of(speaker)
                if where != rep.channel:
                    continue
                seen = out.get(speaker)
                if seen is None:
                    out[speaker] = (loss, late, 1, burst)
                else:
                    out[speaker] = (
                        max(seen[0], loss),
                        max(seen[1], late),
                        seen[2] + 1,
                        max(seen[3], burst),
                    )
        return out

    def tick(self, now: float) -> list[tuple[int, ReceiverReport]]:
        """The ``receiver_report`` due to each speaker at ``now``: ``(speaker, message)``."""
        worst = self.worst(now)
        out: list[tuple[int, ReceiverReport]] = []
        for speaker in list(self._sent):
            if speaker not in worst:  # nobody counts any more: say so once, then forget it
                del self._sent[speaker]
                out.append((speaker, ReceiverReport(0.0, 0.0, 0)))
        for speaker, (loss, late, n, burst) in worst.items():
            last = self._sent.get(speaker)
            if (
                last is None
                or abs(loss - last.loss) >= self.step
                or abs(late - last.late) >= self.step
                or abs(burst - last.burst) >= BURST_STEP
                or n != last.listeners
                or now - last.at >= self.resend
            ):
                self._sent[speaker] = _Sent(loss, late, n, now, burst)
                msg = ReceiverReport(
                    round(loss, 1), round(late, 1), min(n, MAX_LISTENERS), round(burst, 2)
                )
                out.append((speaker, msg))
        self.counters.receiver_reports += len(out)
        return out
