"""The Server menu, the connect dialog and the connection's phases, through the real window:
real client processes under the window's ClientHost, and a real relay."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from PyQt6.QtCore import QSettings, Qt
from pytestqt.qtbot import QtBot

from pipeline.media.sources import MediaSpec
from relay.launch import start_relay, stop_relay
from tests.conftest import RelayProcess
from ui import connection as cn
from ui.busbridge import BusBridge
from ui.connect import ConnectInfo
from ui.favourites import Favourite
from ui.host import ClientConfig, ClientHost
from ui.window import MainWindow

pytestmark = pytest.mark.timeout(120)
WAIT = 20000  # ms: generous for a loaded machine; nothing here asserts timing


def owned_window(qtbot: QtBot, tmp_path: Path) -> MainWindow:
    """A window owning a client that is not started: as ``python -m ui`` opens."""
    cfg = ClientConfig(
        host="", port=0, name="", source=MediaSpec("silence"), sink=MediaSpec("null")
    )
    settings = QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)
    window = MainWindow(BusBridge(), ClientHost(cfg), settings=settings)
    qtbot.addWidget(window)
    window.show()
    return window


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_server_that_never_answers_stops_and_says_why_with_a_retry(
    qtbot: QtBot, tmp_path: Path
) -> None:
    port = free_port()
    window = owned_window(qtbot, tmp_path)
    assert window.status.text() == "Not connected" and window.servers.banner.isVisible()
    window.connection.max_first_attempts = 2
    window.connect_to(ConnectInfo("127.0.0.1", port, "ann"))
    host = window.host
    assert host is not None and host.running
    try:
        qtbot.waitUntil(lambda: window.connection.phase == cn.UNREACHABLE, timeout=WAIT)
        assert not host.running  # gave up: no client keeps trying in the background
        assert window.status.text() == (
            f"Could not connect to 127.0.0.1:{port}: nothing answers there: "
            "is the server running, and is the port right?"
        )
        assert window.servers.banner_title.text() == f"Could not connect to 127.0.0.1:{port}"
        assert window.servers.banner.isVisible() and window.servers.retry_button.isVisible()
        assert not window.tree.isEnabled()
        config = tmp_path / "relay.toml"
        config.write_text(
            'channels = ["Lobby", { name = "Quiz", description = "Fridays", max_users = 4 }]\n'
        )
        proc, _ = start_relay("--port", str(port), "--config", str(config))
        try:
            qtbot.mouseClick(window.servers.retry_button, Qt.MouseButton.LeftButton)
            qtbot.waitUntil(lambda: window.connection.online, timeout=WAIT)
            assert not window.servers.banner.isVisible() and window.tree.isEnabled()

            def described() -> bool:  # the relay's channel_list, in the tree
                quiz = window.model.channel_item("Quiz")
                return quiz is not None and quiz.text() == "Quiz  (0/4)  \u2013 Fridays"

            qtbot.waitUntil(described, timeout=WAIT)
        finally:
            window.shutdown()
            stop_relay(proc)
    finally:
        window.shutdown()


def test_connect_dialog_favourites_a_taken_name_and_disconnect(
    qtbot: QtBot, tmp_path: Path, relay: RelayProcess
) -> None:
    server = f"127.0.0.1:{relay[1]}"
    first = owned_window(qtbot, tmp_path / "a")
    second = owned_window(qtbot, tmp_path / "b")
    try:
        # The dialog from the Server menu checks the address as it is typed.
        first.servers.connect_action.trigger()
        dialog = first.servers.dialog
        assert dialog is not None and dialog.isVisible()
        dialog.server.setText("127.0.0.1")
        assert dialog.error.isVisible() and "HOST:PORT" in dialog.error.text()
        dialog.server.setText(server)
        assert not dialog.error.isVisible()
        dialog.name.setText("alice")
        dialog.accept()
        qtbot.waitUntil(lambda: first.connection.online, timeout=2 * WAIT)  # a slow first start
        # The other window connects from a favourite, under the same name.
        second.servers.favourites.put(Favourite("Local", server, "alice"))
        second.servers.refresh_favourites()
        (action,) = second.servers.favourite_actions()
        assert action.text() == f"Local  (alice @ {server})"
        action.trigger()
        qtbot.waitUntil(lambda: second.connection.online, timeout=2 * WAIT)
        qtbot.waitUntil(
            lambda: (
                "you are alice-2 on this server: alice was taken" in "\n".join(second.chat.lines())
            ),
            timeout=WAIT,
        )
        assert "alice-2" in second.windowTitle()
        # Disconnect: the client is stopped, the window stays and can connect again.
        second.servers.disconnect_action.trigger()
        host = second.host
        assert host is not None and not host.running
        assert second.status.text() == f"Disconnected from {server}"
        assert not second.tree.isEnabled() and second.servers.retry_action.isEnabled()
        qtbot.waitUntil(lambda: first.model.users_in("Lobby") == ["alice"], timeout=WAIT)
    finally:
        second.shutdown()
        first.shutdown()


def test_a_list_of_servers_connects_through_the_one_that_answers(
    qtbot: QtBot, tmp_path: Path, relay: RelayProcess
) -> None:
    down, up = free_port(), relay[1]
    window = owned_window(qtbot, tmp_path)
    try:
        window.connect_to(ConnectInfo("127.0.0.1", down, "ann", fallbacks=(("127.0.0.1", up),)))
        host = window.host
        assert host is not None and host.cfg.servers == [("127.0.0.1", down), ("127.0.0.1", up)]
        qtbot.waitUntil(lambda: window.connection.online, timeout=WAIT)
        assert window.status.text().startswith(f"Connected to 127.0.0.1:{up} as ann")
        assert window._server() == f"127.0.0.1:{down},127.0.0.1:{up}"  # Retry: the whole list
    finally:
        window.shutdown()


def test_a_favourite_keeps_the_password_if_asked_and_shows_the_pinned_certificate(
    qtbot: QtBot, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    proc, port = start_relay("--password-file", str(secret))
    server = f"127.0.0.1:{port}"
    window = owned_window(qtbot, tmp_path)
    try:
        first = window.servers.open_dialog()
        first.server.setText(server)
        assert first.certificate.text() == "not seen yet: pinned on the first connection"
        first.reject()
        # A wrong password: stopped, and said so in words (the certificate is pinned).
        window.connect_to(ConnectInfo("127.0.0.1", port, "ann", "guess"))
        qtbot.waitUntil(lambda: window.connection.phase == cn.FAILED, timeout=2 * WAIT)
        assert "the server's password is wrong" in window.status.text()
        # The dialog: saved as a favourite with its password; it connects.
        dialog = window.servers.open_dialog()
        dialog.server.setText(server)
        dialog.name.setText("ann")
        dialog.password.setText("s3cret")
        dialog.label.setText("Club")
        dialog.save_password.setChecked(True)
        dialog.save_favourite()
        dialog.accept()
        qtbot.waitUntil(lambda: window.connection.online, timeout=2 * WAIT)
        window.servers.disconnect_action.trigger()
        # From the Server menu's favourite: the saved password gets in again...
        (action,) = window.servers.favourite_actions()
        action.trigger()
        qtbot.waitUntil(lambda: window.connection.online, timeout=2 * WAIT)
        # ...and the dialog shows the certificate the first connection pinned.
        again = window.servers.open_dialog()
        again.list.setCurrentRow(0)
        assert again.password.text() == "s3cret" and again.save_password.isChecked()
        pin = again.favourites.pinned(f"127.0.0.1:{port}")
        assert pin and again.certificate.text() == f"pinned {pin}"
        again.reject()
    finally:
        window.shutdown()
        stop_relay(proc)
