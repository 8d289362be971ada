"""Presence fan-out, sans-I/O: batched per connection, a snapshot for whoever falls behind.

Presence is server-wide, so a join storm of N sessions makes N² deliveries. The
session table encodes each event once (:class:`relay.session_table.Presence`);
this object decides when and how it reaches each connection:

* events are logged, not written: :meth:`PresenceFanout.flush` writes each
  connection everything logged since the last flush as one joined byte string
  (computed once for all connections that subscribed before the round began), at
  most once per ``interval``, so a storm costs one write per connection per
  interval instead of one per event;
* a connection whose transport holds more than ``high_water`` bytes is *behind*:
  it gets no more events, and once its queue is back under ``low_water`` it gets
  one snapshot (the session table's ``user_list`` pages, encoded once for every
  connection that needs it), which supersedes everything it missed;
* when the batch for a connection would be larger than the snapshot, the
  snapshot goes instead;
* a session that arrives and leaves within one round (a probe, a scanner, a
  client that fails at once) is told to no one: its ``user_joined`` and
  ``user_left`` both drop out of the round, unless a connection subscribed in
  between (its welcome listed the session, so it needs the ``user_left``). An
  auth-then-leave on a full relay then costs no write to every other connection.

Every method takes the time (or what the adapter measured, such as a
connection's queued bytes) as arguments; no sockets, no clock, no logging.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

PRESENCE_INTERVAL = 0.05  # seconds between two presence writes to one connection
HIGH_WATER = 256 * 1024  # bytes queued for a connection beyond which it is behind
LOW_WATER = 64 * 1024  # bytes queued under which a connection that was behind gets a snapshot
# A batch smaller than this is sent without asking for the snapshot to compare with.
SNAPSHOT_CHECK = 16 * 1024


@dataclass(slots=True)
class _Subscriber:
    since: int  # index in the round's log of the first event it has not been given
    behind: bool = False  # waiting for its queue to drain, then a snapshot


@dataclass(slots=True)
class FanoutCounters:
    batches: int = 0  # writes of logged events
    snapshots: int = 0  # snapshots written instead of events
    fell_behind: int = 0  # times a connection was found over the high water mark


class PresenceFanout:
    """The presence stream of every subscribed connection (those that hold a session)."""

    def __init__(
        self,
        interval: float = PRESENCE_INTERVAL,
        high_water: int = HIGH_WATER,
        low_water: int = LOW_WATER,
    ) -> None:
        self.interval = interval
        self.high_water = high_water
        self.low_water = low_water
        self.counters = FanoutCounters()
        self._log: list[bytes] = []  # events since the last flush, encoded
        self._arrived: dict[int, int] = {}  # user id -> log index of its arrival, this round
        self._passed: list[tuple[int, int]] = []  # (arrival, departure) log indices
        self._late: list[int] = []  # connections subscribed since this round began
        self._subs: dict[int, _Subscriber] = {}
        self._behind = 0  # subscribers waiting for a snapshot
        self._last_flush = float("-inf")

    def __contains__(self, conn: int) -> bool:
        return conn in self._subs

    def subscribe(self, conn: int) -> None:
        """``conn`` got its welcome: it gets every event published from now on."""
        if conn not in self._subs:
            self._subs[conn] = _Subscriber(len(self._log))
            if self._log:
                self._late.append(conn)  # its stream begins inside this round

    def unsubscribe(self, conn: int) -> None:
        sub = self._subs.pop(conn, None)
        if sub is not None and sub.behind:
            self._behind -= 1

    def publish(
        self, data: bytes, but: int | None = None, arrival: int = 0, departure: int = 0
    ) -> None:
        """Encoded presence frames for every subscriber but ``but``.

        ``but`` is never a subscriber: the adapter subscribes a connection only
        after carrying out the actions that gave it its session and welcome.
        ``arrival``/``departure``: the user id whose coming (a new session's
        ``user_joined``) or going (its ``user_left``) ``data`` is alone, if so.
        """
        assert but is None or but not in self._subs, "subscribed before its own announcement"
        if not self._subs:
            return
        if departure and departure in self._arrived:
            self._passed.append((self._arrived.pop(departure), len(self._log)))
        self._log.append(data)
        if arrival:
            self._arrived[arrival] = len(self._log) - 1

    @property
    def pending(self) -> bool:
        """Whether events wait for the next round."""
        return bool(self._log)

    def next_flush(self) -> float | None:
        """When :meth:`flush` has work to do (monotonic seconds), or None."""
        if not self._log and not self._behind:
            return None
        return self._last_flush + self.interval

    def flush(
        self, now: float, queued: Callable[[int], int], snapshot: Callable[[], bytes]
    ) -> list[tuple[int, bytes]]:
        """What to write to which connection at ``now``: ``(conn, data)`` pairs.

        ``queued(conn)`` is how many bytes the connection's transport holds unsent;
        ``snapshot()`` the encoded user list as it is now (called at most once).
        """
        log = self._log
        self._drop_passers_by(log)
        if not self._behind and not any(log):  # nothing left to tell (or no one behind)
            return self._end_round(now, [])
        end = len(log)
        batches: dict[int, bytes] = {}  # since -> the joined events from there
        snap: bytes | None = None
        out: list[tuple[int, bytes]] = []
        for conn, sub in self._subs.items():
            since, sub.since = sub.since, 0
            if not sub.behind and since < end:
                if queued(conn) > self.high_water:
                    sub.behind = True
                    self._behind += 1
                    self.counters.fell_behind += 1
                    continue
                batch = batches.get(since)
                if batch is None:
                    batch = batches[since] = b"".join(log[since:])
                if not batch:
                    continue  # its events all dropped out: nothing to write
                if len(batch) > SNAPSHOT_CHECK:
                    snap = snapshot() if snap is None else snap
                if snap is not None and len(snap) < len(batch):
                    batch = snap
                    self.counters.snapshots += 1
                else:
                    self.counters.batches += 1
                out.append((conn, batch))
            elif sub.behind and queued(conn) <= self.low_water:
                snap = snapshot() if snap is None else snap
                sub.behind = False
                self._behind -= 1
                self.counters.snapshots += 1
                out.append((conn, snap))
        return self._end_round(now, out)

    def _end_round(self, now: float, out: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        for conn in self._late:  # the next round's log starts at 0 for everyone
            sub = self._subs.get(conn)
            if sub is not None:
                sub.since = 0
        self._late.clear()
        self._log.clear()
        self._arrived.clear()
        self._passed.clear()
        self._last_flush = now
        return out

    def _drop_passers_by(self, log: list[bytes]) -> None:
        """Blank the arrival and departure of each session that came and went this round,
        unless a subscriber's stream begins between them."""
        if not self._passed:
            return
        subs = self._subs
        starts = {subs[c].since for c in self._late if c in subs}  # began within the round
        for arrived, departed in self._passed:
            if not any(arrived < start <= departed for start in starts):
                log[arrived] = log[departed] = b""
