"""pipeline/stages/trace.py: the per-frame tracer of the latency benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.stages.trace import Tracer


def test_tracer_saves_rows_up_to_its_capacity(tmp_path: Path) -> None:
    t = Tracer(str(tmp_path / "x.npy"), 3, capacity=2)
    for i in range(3):
        t.add(i, i * 10, i * 100)
    t.save()
    rows = np.load(tmp_path / "x.npy")
    assert rows.tolist() == [[0, 0, 0], [1, 10, 100]]


def test_disabled_tracer_writes_nothing(tmp_path: Path) -> None:
    off = Tracer(None, 3)
    off.add(1, 2, 3)
    off.save()
    assert list(tmp_path.iterdir()) == []
