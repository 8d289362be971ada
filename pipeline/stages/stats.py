"""Counters and latency windows a stage keeps, and the periodic stats it publishes."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pipeline.ipc import events as ev
from pipeline.ipc.bus import BusClient

STATS_INTERVAL = 0.5  # seconds between stats events (the UI redraws at this rate)


class LatencyWindow:
    """The most recent N latency samples (ns), with percentiles in ms. No per-sample allocation."""

    def __init__(self, size: int = 1024) -> None:
        self._buf = np.zeros(size, dtype=np.int64)
        self._n = 0

    def add(self, ns: int) -> None:
        self._buf[self._n % len(self._buf)] = ns
        self._n += 1

    def summary(self) -> dict[str, float]:
        k = min(self._n, len(self._buf))
        if k == 0:
            return {}
        p50, p99 = np.percentile(self._buf[:k], [50, 99]) / 1e6
        return {"p50": round(float(p50), 3), "p99": round(float(p99), 3), "n": self._n}


class StageStats:
    """What one stage reports: counters, latency windows, and any extra values."""

    def __init__(self, stage: str, bus: BusClient) -> None:
        self.stage = stage
        self.bus = bus
        self.counters: dict[str, int] = {}
        self.latency: dict[str, LatencyWindow] = {}
        self._next = time.monotonic() + STATS_INTERVAL

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def window(self, name: str) -> LatencyWindow:
        w = self.latency.get(name)
        if w is None:
            w = self.latency[name] = LatencyWindow()
        return w

    def due(self, now: float) -> bool:
        return now >= self._next

    def values(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counters)
        out["latency_ms"] = {k: w.summary() for k, w in self.latency.items()}
        if extra:
            out.update(extra)
        return out

    def publish(self, now: float, extra: dict[str, Any] | None = None) -> None:
        self._next = now + STATS_INTERVAL
        self.bus.publish(ev.Stats(self.stage, self.values(extra)))


class Tracer:
    """Per-frame timestamps for the latency benchmark: rows of (seq, t0, t1, ...) in ns.

    Disabled (path None) it costs one branch per frame. Enabled, rows go into a
    preallocated array and are saved as .npy when the stage closes.
    """

    def __init__(self, path: str | None, columns: int, capacity: int = 200_000) -> None:
        self.path = path
        self._rows = np.zeros((capacity if path else 0, columns), dtype=np.int64)
        self._n = 0

    def __bool__(self) -> bool:
        return self.path is not None

    def add(self, *values: int) -> None:
        if self.path is not None and self._n < len(self._rows):
            self._rows[self._n, : len(values)] = values
            self._n += 1

    def save(self) -> None:
        if self.path is not None:
            np.save(self.path, self._rows[: self._n])
