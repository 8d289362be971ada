"""bench/udp_sampling.py runs end to end with --quick (a smoke test: no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import udp_sampling


def test_quick_run_writes_a_result(tmp_path: Path) -> None:
    results = udp_sampling.main(["--quick", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "udp_sampling.json").read_text())
    assert doc["benchmark"] == "udp_sampling" and doc["quick"] is True
    assert set(results) == {"fanout1", "fanout9", "bookkeeping"}
    for key in ("fanout1", "fanout9"):
        row = doc["results"][key]
        assert row["plain"]["rounds"] > 0 and row["sampled"]["rounds"] > 0
