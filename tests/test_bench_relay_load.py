"""bench/relay_load.py: the load generator runs end to end (smoke test, no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import relay_load


def test_quick_run_writes_results(tmp_path: Path) -> None:
    relay_load.main(["--quick", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "relay_load.json").read_text())
    assert doc["benchmark"] == "relay_load" and doc["quick"] is True
    modes = {r["udp_mode"] for r in doc["runs"]}
    assert modes == set(relay_load.MODES)
    for run in doc["runs"]:
        for phase in ("saturated", "paced"):
            result = run[phase]
            assert result["forwarded_per_s"] > 0
            assert result["delay_us"]["n"] > 0
    ramp = doc["ramp"]
    assert [s["talkers"] for s in ramp["steps"]][:1] == [10]
    assert ramp["sessions"] == 20 and "memory_per_session_kib" in ramp
    for step in ramp["steps"]:
        assert step["delay_us"]["n"] > 0 and 0 < step["taken_share"] <= 1.5
