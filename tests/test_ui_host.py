"""The UI owning a real client: six stage processes under a Supervisor, and a real relay.

No sound card: silence in, null out (or a generated tone). The autouse fixture
in conftest.py fails any test that leaves a process or a /dev/shm segment.
"""

from __future__ import annotations

import functools
import os
import signal

import pytest
from PyQt6.QtCore import Qt
from pytestqt.qtbot import QtBot

from pipeline.ipc import events as ev
from pipeline.media.sources import MediaSpec
from relay.launch import start_relay, stop_relay
from tests.conftest import RelayProcess
from ui.busbridge import BusBridge
from ui.host import ClientConfig, ClientHost, parse_media, spec_text
from ui.model import DEAFENED_ROLE, MUTED_ROLE, SPEAKING_ROLE
from ui.window import MainWindow

pytestmark = pytest.mark.timeout(120)
WAIT = 20000  # ms: generous, for a loaded CI machine; nothing here asserts timing


SILENCE = MediaSpec("silence")


def client_window(qtbot: QtBot, port: int, name: str, source: MediaSpec = SILENCE) -> MainWindow:
    cfg = ClientConfig(
        host="127.0.0.1", port=port, name=name, source=source, sink=MediaSpec("null")
    )
    window = MainWindow(BusBridge(), ClientHost(cfg))
    qtbot.addWidget(window)
    window.show()
    assert window.host is not None
    window.host.start()
    return window


def test_spec_text_is_what_the_pickers_hold() -> None:
    for text in ("silence", "tone:440", "speech"):
        assert spec_text(parse_media(text, "input")) == text
    assert spec_text(parse_media("null", "output")) == "null"
    assert spec_text(MediaSpec("device")) == "device"
    assert spec_text(MediaSpec("device", "2")) == "device:2"
    assert spec_text(MediaSpec("wav", "/tmp/in.wav")) == "/tmp/in.wav"


def replaced(host: ClientHost, pid: int) -> bool:
    """The decode stage was restarted with a new pid, or the client gave up."""
    return host.supervisor is None or host.supervisor.pids.get("decode") != pid


def connected(window: MainWindow) -> bool:
    return window.status.text().startswith("Connected")


def everyone(window: MainWindow) -> list[str]:
    return [name for channel in window.model.channels() for name in window.model.users_in(channel)]


def test_chat_round_trip_through_a_real_relay(qtbot: QtBot, relay: RelayProcess) -> None:
    window = client_window(qtbot, relay[1], "ann")
    try:
        qtbot.waitUntil(lambda: connected(window), timeout=WAIT)
        qtbot.waitUntil(
            lambda: "ann" in everyone(window),
            timeout=WAIT,
        )
        qtbot.keyClicks(window.chat.input, "hello through the relay")
        qtbot.keyClick(window.chat.input, Qt.Key.Key_Return)
        qtbot.waitUntil(
            lambda: any(
                line.endswith("ann: hello through the relay") for line in window.chat.lines()
            ),
            timeout=WAIT,
        )
        # Every stage reports, and the overlay shows the links' round trips.
        qtbot.waitUntil(
            lambda: {"control", "network", "decode", "playback"} <= set(window.view.reports),
            timeout=WAIT,
        )
        window.toggle_overlay()
        assert "TCP ping" in window.overlay.text.text()
        # Quit from the tray: the window closes and every process stops (the autouse
        # fixture fails the test if a process or a shared-memory segment is left).
        window.tray.quit_chosen.emit()
        assert window.host is not None and not window.host.running
    finally:
        window.shutdown()


def test_a_remote_speaker_is_highlighted_and_diagnosed(qtbot: QtBot, relay: RelayProcess) -> None:
    listener = client_window(qtbot, relay[1], "lis")
    talker = client_window(qtbot, relay[1], "tal", source=MediaSpec("tone", "440"))
    try:
        # The status bar says "Connected" on the ConnectionState event; the Roster that
        # names the talker's own id is published just after it and may not be here yet
        # (reading it then gave 0, and the test waited for user 0 to be heard).
        qtbot.waitUntil(
            lambda: connected(listener) and connected(talker) and talker.view.roster.me != 0,
            timeout=WAIT,
        )
        tal = talker.view.roster.me

        def lit() -> bool:
            item = listener.model.user_item(tal)
            return item is not None and item.data(SPEAKING_ROLE) is True

        # Heard first (a loaded machine starts the talker's stages slowly), then lit.
        qtbot.waitUntil(lambda: tal in listener.view.heard, timeout=2 * WAIT)
        qtbot.waitUntil(lit, timeout=WAIT)
        listener.toggle_overlay()
        assert "tal" in listener.overlay.text.text()
        assert listener.overlay.history.samples
        # A volume chosen in the listener's window reaches its decode stage's mix.
        listener.set_volume(tal, percent=40)
        qtbot.waitUntil(
            lambda: (
                listener.view.decode is not None
                and listener.view.decode.gains == [ev.SpeakerGain(tal, 0.4)]
            ),
            timeout=WAIT,
        )
    finally:
        talker.shutdown()
        listener.shutdown()


def test_a_relay_restart_greys_out_keeps_the_unsent_line_and_announces_only_news(
    qtbot: QtBot,
) -> None:
    proc, port = start_relay("--channel", "Lobby", "--channel", "Gaming")
    bea = client_window(qtbot, port, "bea")
    cal = client_window(qtbot, port, "cal")
    again = None
    try:
        qtbot.waitUntil(lambda: sorted(everyone(bea)) == ["bea", "cal"], timeout=2 * WAIT)
        bea.join("Gaming")
        qtbot.waitUntil(lambda: cal.model.users_in("Gaming") == ["bea"], timeout=WAIT)
        before = len(cal.chat.lines())
        stop_relay(proc)
        qtbot.waitUntil(
            lambda: bea.status.text().startswith("Connection lost; reconnecting"), timeout=WAIT
        )
        assert "(attempt " in bea.status.text()
        assert not bea.tree.isEnabled()
        assert bea.status.link.text() == "TCP \u2013 · UDP \u2013 · loss \u2013"
        qtbot.keyClicks(bea.chat.input, "still there?")
        qtbot.keyClick(bea.chat.input, Qt.Key.Key_Return)
        assert bea.chat.input.text() == "still there?"  # kept, not lost
        # The relay comes back without the channel bea was in.
        again, _ = start_relay("--port", str(port), "--channel", "Lobby")
        qtbot.waitUntil(lambda: connected(bea) and connected(cal), timeout=WAIT)
        qtbot.waitUntil(lambda: sorted(everyone(cal)) == ["bea", "cal"], timeout=WAIT)
        qtbot.waitUntil(lambda: bea.tree.isEnabled(), timeout=WAIT)
        assert any(
            "there is no channel Gaming any more; you are in Lobby" in line
            for line in bea.chat.lines()
        )
        # cal saw bea move (a real change) and nothing else: no leave/join churn.
        news = [line.split("* ", 1)[1] for line in cal.chat.lines()[before:] if "* " in line]
        assert news == ["bea moved to Lobby"], news
        qtbot.keyClick(bea.chat.input, Qt.Key.Key_Return)
        qtbot.waitUntil(
            lambda: any(line.endswith("bea: still there?") for line in cal.chat.lines()),
            timeout=WAIT,
        )
    finally:
        cal.shutdown()
        bea.shutdown()
        stop_relay(again or proc)


def test_changing_the_input_restarts_the_client_and_keeps_settings(
    qtbot: QtBot, relay: RelayProcess
) -> None:
    window = client_window(qtbot, relay[1], "cy")
    host = window.host
    assert host is not None
    try:
        qtbot.waitUntil(lambda: connected(window), timeout=WAIT)
        window.audio.chaos.setValue(30)
        old = window.bridge.address
        window.audio.input.select("silence")
        window.audio.input.chosen.emit("tone:440")
        assert host.cfg.source == MediaSpec("tone", "440") and host.cfg.loss_percent == 30.0
        assert window.bridge.address != old
        qtbot.waitUntil(lambda: connected(window), timeout=WAIT)
        qtbot.waitUntil(lambda: window.audio.meter.value() > 30, timeout=WAIT)  # the tone is loud
        qtbot.waitUntil(
            lambda: window.view.network is not None and window.view.network.chaos_percent == 30.0,
            timeout=WAIT,
        )
        # A choice that cannot be used is refused and the client keeps running.
        window.audio.input.chosen.emit("/nonexistent/file.wav")
        assert host.running and host.cfg.source == MediaSpec("tone", "440")
        assert "input not changed" in window.chat.lines()[-1]
    finally:
        window.shutdown()


def test_a_stage_that_keeps_dying_shows_the_reason(qtbot: QtBot, relay: RelayProcess) -> None:
    window = client_window(qtbot, relay[1], "dee")
    host = window.host
    assert host is not None
    try:
        qtbot.waitUntil(lambda: connected(window), timeout=WAIT)
        for _ in range(10):
            if host.supervisor is None:
                break
            pid = host.supervisor.pids["decode"]
            os.kill(pid, signal.SIGKILL)
            qtbot.waitUntil(functools.partial(replaced, host, pid), timeout=WAIT)
        qtbot.waitUntil(lambda: window.status.text().startswith("Stopped"), timeout=WAIT)
        assert "decode stage died" in window.status.text()
        assert not host.running
    finally:
        window.shutdown()


def test_mute_and_deafen_show_in_the_others_trees(qtbot: QtBot, relay: RelayProcess) -> None:
    ann = client_window(qtbot, relay[1], "ann")
    ben = client_window(qtbot, relay[1], "ben")
    try:
        # A loaded machine starts twelve processes slowly: the first connect gets longer.
        qtbot.waitUntil(
            lambda: sorted(everyone(ben)) == ["ann", "ben"] and ann.view.roster.me != 0,
            timeout=2 * WAIT,
        )
        me = ann.view.roster.me

        def shown(muted: bool, deafened: bool) -> bool:
            row = ben.model.user_item(me)
            return (
                row is not None
                and row.data(MUTED_ROLE) is muted
                and row.data(DEAFENED_ROLE) is deafened
            )

        ann.audio.deafen.setChecked(True)  # deafen mutes too
        qtbot.waitUntil(lambda: shown(True, True), timeout=WAIT)
        qtbot.waitUntil(lambda: ann.view.encode is not None and ann.view.encode.muted, timeout=WAIT)
        ann.audio.deafen.setChecked(False)
        qtbot.waitUntil(lambda: shown(False, False), timeout=WAIT)
        ann.audio.mute.setChecked(True)
        qtbot.waitUntil(lambda: shown(True, False), timeout=WAIT)

        def own_muted() -> bool:
            own = ann.model.user_item(me)
            return own is not None and own.data(MUTED_ROLE) is True

        qtbot.waitUntil(own_muted, timeout=WAIT)  # your own row shows what the others see
    finally:
        ben.shutdown()
        ann.shutdown()
