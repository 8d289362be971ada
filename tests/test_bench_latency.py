"""bench/latency.py: the per-stage latency benchmark runs end to end (smoke test, no timings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import latency

pytestmark = pytest.mark.timeout(180)


def test_quick_run_joins_every_hop(tmp_path: Path) -> None:
    latency.main(["--quick", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "latency.json").read_text())
    for config in doc["configs"].values():
        assert config["total"]["n"] > 50
        assert set(latency.HOPS) <= set(config)
        # The hops of a frame add up to its total (each hop is measured, none estimated).
        hop_sum = sum(config[h]["mean"] for h in latency.HOPS)
        assert abs(hop_sum - config["total"]["mean"]) < 1e-6
    assert [c["floor_ms"]["jitter_hold"] for c in doc["configs"].values()] == [40, 6, 6, 6, 6]
    paced = doc["configs"]["adaptive, just in time"]
    assert paced["floor_ms"]["sink_wait"] < 20 and paced["lead_ms"] > 0  # the pacer's lead
    assert 0 <= paced["mid_call"]["concealed"] <= paced["mid_call"]["frames"]
    assert paced["mid_call"]["frames"] > 50
    fixed, adaptive = (
        doc["configs"]["fixed, playback_frames=2"],
        doc["configs"]["adaptive, playback_frames=2"],
    )
    assert fixed["target_ms"] == 0 and adaptive["target_ms"] > 0  # only one of them adapts
    # The per-frame cost of sealed voice, beside the budget it is part of.
    crypto = doc["crypto_per_frame_us"]
    assert set(crypto) == {"seal", "relay_check", "open"} and all(v > 0 for v in crypto.values())
