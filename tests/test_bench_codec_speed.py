"""bench/codec_speed.py runs end to end with --quick (a smoke test: no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import codec_speed


def test_quick_run_writes_a_result(tmp_path: Path) -> None:
    codec_speed.main(["--quick", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "codec_speed.json").read_text())
    assert doc["benchmark"] == "codec_speed" and doc["frames"] == 50
    for op in ("encode_loss0", "encode_loss10", "decode", "plc", "fec"):
        assert doc["results"][op]["raw"]["n"] == 50
        assert doc["results"][op]["opuslib"]["n"] == 50
