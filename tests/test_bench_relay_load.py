"""bench/relay_load.py: the load generator runs end to end (smoke test, no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    compared = doc["sealed_vs_plaintext"]  # issue 12: the two paths side by side
    assert compared["fan_out"] == [9] and compared["runs"] == [1, 1]
    assert compared["thread"] > 0 and compared["sealed"] > 0
    assert compared["ratio"] == compared["sealed"] / compared["thread"]
    assert compared["keeps_floor"] is (compared["ratio"] >= relay_load.SEALED_FLOOR)
    ramp = doc["ramp"]
    assert [s["talkers"] for s in ramp["steps"]][:1] == [10]
    assert ramp["sessions"] == 20 and "memory_per_session_kib" in ramp
    for step in ramp["steps"]:
        assert step["delay_us"]["n"] > 0 and 0 < step["taken_share"] <= 1.5


def run(mode: str, channels: int, per_cpu_s: float) -> dict[str, Any]:
    saturated = {"forwarded_per_relay_cpu_s": per_cpu_s}
    return {"udp_mode": mode, "channels": channels, "fan_out": 9, "saturated": saturated}


def test_side_by_side_takes_medians_per_mode_and_says_whether_the_floor_holds() -> None:
    runs = [run("thread", 1, 100.0), run("sealed", 1, 70.0), run("thread", 10, 200.0),
            run("sealed", 10, 50.0), run("thread", 1, 150.0), run("sealed", 1, 40.0),
            run("workers2", 1, 999.0)]  # fmt: skip
    got = relay_load.side_by_side(runs)
    assert got is not None
    assert got["thread"] == 150.0 and got["sealed"] == 50.0 and got["runs"] == [3, 3]
    assert got["ratio"] == 50.0 / 150.0 and got["keeps_floor"] is False
    assert got["per_channels"]["1"]["ratio"] == 55.0 / 125.0
    assert got["per_channels"]["10"]["ratio"] == 0.25
    at_floor = relay_load.side_by_side([run("thread", 1, 1.0), run("sealed", 1, 0.6)])
    assert at_floor is not None and at_floor["keeps_floor"] is True
    assert relay_load.side_by_side(runs[:1]) is None  # one mode only: nothing to compare
