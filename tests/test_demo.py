"""pipeline/demo.py: ``make demo`` as a new user runs it, end to end in its own process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.demo import ROOT

pytestmark = pytest.mark.timeout(120)


def test_the_demo_says_voice_went_through(tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "pipeline.demo", "--seconds", "4", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "voice went through" in p.stdout
    assert "mouth-to-ear" in p.stdout and "correlation" in p.stdout
    # Encrypted: Bob's voice came sealed (only protocol 2's replay windows count "good").
    opened = re.search(r"sealed voice: bob opened (\d+) datagrams, refused (\d+) forged", p.stdout)
    assert opened is not None and int(opened[1]) > 100 and int(opened[2]) == 0, p.stdout
    assert (tmp_path / "demo-heard.wav").stat().st_size > 4 * 48_000  # seconds of audio
