"""bench/report.py: REPORT.md and the plots are built from whatever results exist."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench import report
from bench.common import summarize, write_result


def test_report_from_results(tmp_path: Path) -> None:
    hops: dict[str, object] = {h: summarize([1.0, 2.0]) for h in [*report.HOPS, "total"]}
    hops["mouth_to_ear_estimate_ms"] = {"p50": 80.0, "p99": 90.0, "p99.9": 91.0, "max": 92.0}
    hops["overhead_above_floor_ms"] = -6.5
    hops["floor_ms"] = {"frame": 20, "opus_lookahead": 6.5, "jitter_hold": 6, "sink_block": 20,
                        "total": 52.5}  # fmt: skip
    configs = {"adaptive, playback_frames=1": hops}
    write_result("latency", {"seconds": 60, "configs": configs}, tmp_path)
    np.savez(tmp_path / "latency_frames.npz",
             **{f"adaptive1/{h}": np.linspace(0.1, 50, 100) for h in [*report.HOPS, "total"]})  # type: ignore[arg-type]  # fmt: skip
    write_result("quality", {"runs": [
        {"condition": "0%", "mode": "plc", "pesq_wb": 4.2},
        {"condition": "5% random", "mode": "plc", "pesq_wb": 3.1},
    ], "jitter_runs": [
        {"condition": "30 ms jitter", "jitter_buffer": "fixed", "pesq_wb": 2.4, "late": 130,
         "mouth_to_ear_ms": {"p50": 150.0, "p95": 170.0}},
        {"condition": "30 ms jitter", "jitter_buffer": "adaptive", "pesq_wb": 3.9, "late": 9,
         "mouth_to_ear_ms": {"p50": 170.0, "p95": 180.0}, "target_ms": 80.0},
    ], "burst_runs": [
        {"condition": "GE 10% (mean burst 3)", "mode": "red+fec+plc", "pesq_wb": 3.1,
         "body_kbps": 73.0, "wire_kbps": 111.0, "recovered_red": 120, "recovered": 3,
         "concealed": 40},
    ], "burst_summary": {"gap": 1.1, "body_ratio": 1.52, "wire_ratio": 1.29},
    }, tmp_path)  # fmt: skip
    write_result("client_cost", {"talking": {"A.decode": {"cpu_percent": 2.0, "rss_mib": 40}},
                                 "idle": {"idle.decode": {"cpu_percent": 0.5, "rss_mib": 39}}},
                 tmp_path)  # fmt: skip
    write_result("relay_load", {"anything": [1, 2]}, tmp_path)
    write_result("quality_feedback", {"loss_percent": 5.0, "warmup_seconds": 6.0, "summary": {
        "mean_pesq": {"5% listener downlink only, feedback on": 3.41},
        "median_pesq": {"5% listener downlink only, feedback on": 3.54},
        "gap_to_symmetric": {"off": 0.83, "on": 0.07}, "target_gap": 0.4}}, tmp_path)  # fmt: skip
    path = report.build(tmp_path)
    text = path.read_text()
    for heading in ("Mouth-to-ear latency", "Client cost", "Speech quality", "relay_load"):
        assert heading in text
    assert "52.5 ms" in text and "| jitter_wait |" in text
    assert "| 30 ms jitter | adaptive | 3.90 |" in text
    assert "| GE 10% (mean burst 3) | red+fec+plc | 3.10 | 73.0 | 111.0 | 120 | 3 | 40 |" in text
    assert "1.1 below the clean path" in text
    for png in ("latency_cdf.png", "latency_budget.png", "quality.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
        assert f"]({png})" in text


def test_report_survives_an_unexpected_shape(tmp_path: Path) -> None:
    (tmp_path / "latency.json").write_text(json.dumps({"benchmark": "latency", "x": 1}))
    assert "latency" in report.build(tmp_path).read_text()
