"""bench/ring_ipc.py runs end to end with --quick (a smoke test: no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import ring_ipc


def test_quick_run_writes_a_result(tmp_path: Path) -> None:
    results = ring_ipc.main(["--quick", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "ring_ipc.json").read_text())
    assert doc["benchmark"] == "ring_ipc" and doc["quick"] is True
    assert set(results) == set(ring_ipc.TRANSPORTS)
    for per_kind in doc["results"].values():
        for run in per_kind.values():
            assert run["received"] == run["latency_us"]["n"] > 0
