"""``python -m ui`` as a user runs it: bad arguments fail clearly; SIGTERM stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PyQt6.QtCore import QSettings
from pytestqt.qtbot import QtBot

from pipeline.demo import ROOT
from pipeline.media.sources import MediaSpec
from tests.test_pipeline_main import alive, descendants
from ui.__main__ import build_parser, first_connect
from ui.busbridge import BusBridge
from ui.host import ClientConfig, ClientHost
from ui.window import INPUT_KEY, OUTPUT_KEY, MainWindow

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


def test_a_bad_server_opens_the_window_with_the_dialog_and_says_so_on_stderr() -> None:
    proc = ui("--server", "nowhere", "--name", "x", "--input", "silence", "--output", "null")
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        while line and "voicechat-ui" not in line:  # Qt may warn first
            line = proc.stderr.readline()
        assert "HOST:PORT" in line
        assert proc.poll() is None  # the window is up, the dialog in it shows the error too
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_first_connect_shows_a_bad_server_in_the_window(qtbot: QtBot, tmp_path: Path) -> None:
    settings = QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)
    cfg = ClientConfig(
        host="", port=0, name="", source=MediaSpec("silence"), sink=MediaSpec("null")
    )
    window = MainWindow(BusBridge(), ClientHost(cfg), settings=settings)
    qtbot.addWidget(window)
    window.show()
    first_connect(window, build_parser().parse_args(["--server", "nowhere", "--name", "x"]))
    dialog = window.servers.dialog
    assert dialog is not None and dialog.isVisible()
    assert "HOST:PORT" in dialog.error.text() and dialog.error.isVisible()
    assert dialog.server.text() == "nowhere" and dialog.name.text() == "x"
    assert window.host is not None and not window.host.running
    assert window.status.text() == "Not connected"
    window.shutdown()


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


def test_the_audio_chosen_last_time_is_used_when_none_is_given(tmp_path: Path) -> None:
    from ui.__main__ import _media
    from ui.host import parse_media

    settings = QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)
    settings.setValue(INPUT_KEY, "tone:440")
    notices: list[str] = []
    assert _media(None, "input", "silence", notices, parse_media, settings) == MediaSpec(
        "tone", "440"
    )
    assert _media("speech", "input", "silence", notices, parse_media, settings).kind == "speech"
    settings.setValue(OUTPUT_KEY, "/nonexistent/dir/out.wav")
    out = _media(None, "output", "null", notices, parse_media, settings)
    assert out.kind in ("device", "null")  # the device, or null without one
    assert "the output chosen last time cannot be used" in notices[0]
