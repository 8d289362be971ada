"""``python -m ui`` as a user runs it: bad arguments fail clearly; SIGTERM stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.demo import ROOT
from tests.test_pipeline_main import alive, descendants

pytestmark = pytest.mark.timeout(90)


def ui(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.Popen(
        [sys.executable, "-m", "ui", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_bad_server_is_one_clear_line() -> None:
    proc = ui("--server", "nowhere", "--name", "x")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "HOST:PORT" in err


def test_bad_input_is_one_clear_line() -> None:
    proc = ui("--server", "127.0.0.1:9", "--name", "x", "--input", "nope")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "unknown input 'nope'" in err


def test_sigterm_stops_the_window_and_every_stage(relay_port: int) -> None:
    proc = ui(
        "--server",
        f"127.0.0.1:{relay_port}",
        "--name",
        "term",
        "--input",
        "silence",
        "--output",
        "null",
    )
    try:
        deadline = time.monotonic() + 30
        while len(descendants(proc.pid)) < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        stages = descendants(proc.pid)
        assert len(stages) >= 6, "the six client processes did not start"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
        # multiprocessing's resource tracker leaves a moment after its parent.
        deadline = time.monotonic() + 10
        while alive(stages) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(stages)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
