"""Rate-limited logging: under load the relay writes a few lines per kind, not one per event.

A join storm or a flood of dead peers would otherwise log once per event (the
issue saw 1.66 M asyncio warnings, 121 MB of stderr, in 32 s), and the logging
itself takes the loop from everyone. :class:`RateLimitFilter` lets through at
most ``burst`` records of one kind (the logger and the unformatted message) per
``interval`` seconds; the first record of the next window says how many were
held back. The time is the record's own ``created`` stamp: no clock is read here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

BURST = 20  # records of one kind per window
INTERVAL = 10.0  # seconds in a window
MAX_KINDS = 1024  # kinds remembered; past that the windows start afresh


@dataclass(slots=True)
class _Window:
    start: float
    passed: int = 0
    held: int = 0


class RateLimitFilter(logging.Filter):
    """At most ``burst`` records per kind per ``interval`` seconds; a count of the rest."""

    def __init__(self, burst: int = BURST, interval: float = INTERVAL) -> None:
        super().__init__()
        self.burst = burst
        self.interval = interval
        self.held = 0  # records held back, in all
        self._windows: dict[tuple[str, str], _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = record.created
        w = self._windows.get(key)
        if w is None or now - w.start >= self.interval:
            if len(self._windows) >= MAX_KINDS:
                self._windows.clear()
            held = 0 if w is None else w.held
            w = self._windows[key] = _Window(now)
            if held:
                # No '%' in the note: the message is still formatted with its own args.
                record.msg = f"{record.msg} [{held} more like this in the last window]"
        w.passed += 1
        if w.passed > self.burst:
            w.held += 1
            self.held += 1
            return False
        return True


def install(burst: int = BURST, interval: float = INTERVAL) -> RateLimitFilter:
    """Put one filter on every handler of the root logger (after ``logging.basicConfig``),
    so it covers every logger that propagates there, asyncio's included."""
    flt = RateLimitFilter(burst, interval)
    for handler in logging.getLogger().handlers:
        handler.addFilter(flt)
    return flt
