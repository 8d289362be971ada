"""bench/cluster.py: the cluster benchmark runs end to end (smoke test, no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import cluster, report
from relay.launch import redis_available


@pytest.mark.skipif(not redis_available(), reason="redis-server is not installed (setup.sh)")
def test_quick_run_writes_results_and_the_report_shows_them(tmp_path: Path) -> None:
    cluster.main(["--quick", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "cluster.json").read_text())
    assert doc["benchmark"] == "cluster" and doc["quick"] is True
    assert doc["hop"]["one_relay"]["n"] > 0 and doc["hop"]["two_relays"]["n"] > 0
    for name in ("one_relay", "three_relays"):
        cost = doc["cost"][name]
        assert cost["delivered"] > 0 and cost["expected"] > 0
    assert doc["cost"]["one_relay"]["mesh_sent"] == 0 < doc["cost"]["three_relays"]["mesh_sent"]
    r = doc["redis"]
    assert r["commands_per_join"] > 0 and r["pubsub_fanout"] == 3
    assert set(r["steps"]) == {"auth", "move", "leave"}
    assert r["registry_bytes_per_record"] > 0 and r["idle_out_bytes_per_s"] > 0
    assert doc["hundred_relays"]["registry_bytes_out_per_s"] > 0
    cap = doc["redis_capacity"]
    assert cap["subscribers"] == 100 and cap["messages"] > 0 and cap["event_bytes"] > 0
    assert "joins_per_redis_core_s" in doc["hundred_relays"]
    text = report.build(tmp_path).read_text()
    assert "## The relay cluster" in text and "| two relays |" in text
    assert "(auth " in text and "MB/s out of Redis" in text and "pub/sub delivery" in text
