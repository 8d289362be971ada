"""Who the tree shows talking: the decode stage's word, held a moment. No widgets.

Speech has gaps between words; shown as it is reported, a talker's dot would
blink through every sentence. A user stays lit until ``hold`` seconds after the
decode stage last counted them audible (it already holds for 300 ms itself).
Times are monotonic seconds, passed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

HOLD_S = 0.4


class SpeakingHold:
    def __init__(self, hold: float = HOLD_S) -> None:
        self.hold = hold
        self._until: dict[int, float] = {}  # user id -> lit until (inf: audible right now)

    def update(self, speaking: Iterable[int], now: float) -> None:
        """The decode stage says ``speaking`` are audible now (and nobody else)."""
        audible = set(speaking)
        for uid, until in list(self._until.items()):
            if uid not in audible and until == math.inf:
                self._until[uid] = now + self.hold
        for uid in audible:
            self._until[uid] = math.inf

    def lit(self, now: float) -> set[int]:
        for uid in [u for u, until in self._until.items() if until <= now]:
            del self._until[uid]
        return set(self._until)

    def clear(self) -> None:
        self._until.clear()

    def next_change(self) -> float | None:
        """When :meth:`lit` next drops someone, or None."""
        ends = [t for t in self._until.values() if t != math.inf]
        return min(ends) if ends else None
