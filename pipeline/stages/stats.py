"""The latency windows a stage keeps for its hops, summarised into its stats event."""

from __future__ import annotations

import numpy as np

from pipeline.ipc import events as ev

STATS_INTERVAL = 0.5  # seconds between stats events (the UI redraws at this rate)
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


class LatencyWindow:
    """The most recent N latency samples (ns), with percentiles in ms. No per-sample allocation."""

    def __init__(self, size: int = 1024) -> None:
        self._buf = np.zeros(size, dtype=np.int64)
        self._n = 0

    def add(self, ns: int) -> None:
        # Every sample is a difference of two local clock readings; should a bug ever
        # hand in something else, it costs one wrong sample, not the stage (int64 store).
        self._buf[self._n % len(self._buf)] = min(max(ns, I64_MIN), I64_MAX)
        self._n += 1

    def summary(self, hop: str) -> ev.Percentiles | None:
        """The window's p50 and p99 in ms, or None before the first sample."""
        k = min(self._n, len(self._buf))
        if k == 0:
            return None
        p50, p99 = np.percentile(self._buf[:k], [50, 99]) / 1e6
        return ev.Percentiles(hop, round(float(p50), 3), round(float(p99), 3), self._n)


class Latencies:
    """One window per hop, all made up front.

    A stage may add samples from a second thread (the network stage's sender) while
    its main thread summarises: the dict never changes size after construction.
    """

    def __init__(self, hops: tuple[str, ...]) -> None:
        self._windows = {hop: LatencyWindow() for hop in hops}

    def add(self, hop: str, ns: int) -> None:
        self._windows[hop].add(ns)

    def summary(self) -> list[ev.Percentiles]:
        """Every hop that has samples, in the order the hops were named."""
        out = []
        for hop, window in self._windows.items():
            summary = window.summary(hop)
            if summary is not None:
                out.append(summary)
        return out
