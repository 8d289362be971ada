"""pipeline/stages/stats.py: latency windows and the per-frame tracer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.stages.stats import LatencyWindow, Tracer


def test_latency_window_percentiles_in_ms() -> None:
    w = LatencyWindow(size=100)
    assert w.summary() == {}
    for i in range(1, 201):  # wraps: only the last 100 count
        w.add(i * 1_000_000)
    s = w.summary()
    assert s["n"] == 200 and 149 <= s["p50"] <= 151 and 198 <= s["p99"] <= 200


def test_tracer_saves_rows(tmp_path: Path) -> None:
    t = Tracer(str(tmp_path / "x.npy"), 3, capacity=2)
    for i in range(3):
        t.add(i, i * 10, i * 100)
    t.save()
    rows = np.load(tmp_path / "x.npy")
    assert rows.tolist() == [[0, 0, 0], [1, 10, 100]]
    off = Tracer(None, 3)
    off.add(1, 2, 3)
    off.save()
    assert not off
