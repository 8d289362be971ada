"""bench/client_cost.py: per-process CPU and RSS are measured for every stage (smoke test)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench import client_cost

pytestmark = pytest.mark.timeout(180)


def test_proc_readers() -> None:
    assert client_cost.cpu_seconds(os.getpid()) > 0
    assert client_cost.rss_mib(os.getpid()) > 1


def test_quick_run_measures_every_process(tmp_path: Path) -> None:
    client_cost.main(["--quick", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "client_cost.json").read_text())
    stages = {"control", "capture", "encode", "network", "decode", "playback"}
    assert {k.split(".")[1] for k in doc["talking"] if k.startswith("A.")} == stages
    assert {k.split(".")[1] for k in doc["idle"]} == stages
    for row in [*doc["talking"].values(), *doc["idle"].values()]:
        assert row["cpu_percent"] >= 0 and row["rss_mib"] > 10
