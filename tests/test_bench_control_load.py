"""bench/control_load.py: the control-plane load runs end to end (smoke test, no timing limits)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import control_load, report


def test_quick_run_writes_results(tmp_path: Path) -> None:
    control_load.main(["--quick", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "control_load.json").read_text())
    assert doc["benchmark"] == "control_load" and doc["quick"] is True
    storm = doc["storm"]
    assert storm["sessions"] == 60 and not storm["cut_off"]
    assert storm["ping_ms"]["n"] > 0 and storm["pings_unanswered"] == 0
    assert storm["received_bytes_per_session"] > 0 and storm["sessions_dropped_by_relay"] == 0
    assert set(doc["auth_ms"]) == {"5", "20", "40"}
    assert all(s["n"] == 5 for s in doc["auth_ms"].values())
    assert "Control plane under load" in report.build(tmp_path).read_text()
