"""bench/tunnel.py: the local hop measurement runs and the report shows the tunnel."""

from __future__ import annotations

import json
from pathlib import Path

from bench import report, tunnel


def test_the_local_hop_is_measured_over_both_carriers() -> None:
    hop = tunnel.local_hop(60, 0.002)
    for carrier in ("unix_socket", "bus"):
        assert hop[carrier]["n"] == 60 - tunnel.WARMUP
        assert 0 < hop[carrier]["p50"] < 1_000_000  # microseconds


def test_the_report_has_a_tunnel_section(tmp_path: Path) -> None:
    stats = {"n": 10, "p50": 1.0, "p90": 2.0, "p99": 3.0, "p99.9": 4.0, "max": 5.0, "mean": 1.5}
    config = {hop: stats for hop in ("network_round_trip", "jitter_wait", "total")}
    doc = {
        "seconds": 30.0, "load_before": 1.0, "load_after": 1.2,
        "configs": {"udp": config, "tcp": config},
        "local_hop_us": {"unix_socket": stats, "bus": stats},
    }  # fmt: skip
    (tmp_path / "tunnel.json").write_text(json.dumps(doc))
    text = report.build(tmp_path).read_text()
    assert "## Voice over UDP and through the TCP tunnel" in text
    assert "| network_round_trip | 1.00 | 3.00 | 1.00 | 3.00 |" in text
