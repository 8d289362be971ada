"""The connect dialog validates and remembers server and name with QSettings."""

from __future__ import annotations

from pathlib import Path

import pytest
from PyQt6.QtCore import QSettings
from PyQt6.QtWidgets import QDialog
from pytestqt.qtbot import QtBot

from ui.connect import DEFAULT_SERVER, ConnectDialog, ConnectInfo, parse_server, validate


def test_parse_server() -> None:
    assert parse_server(" relay.example:9000 ") == ("relay.example", 9000)
    assert parse_server("::1:8080") == ("::1", 8080)
    for bad in ("relay", "relay:", ":80", "relay:0", "relay:70000", "relay:http"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_server(bad)


def test_validate_name() -> None:
    assert validate("h:1", " ann ") == ConnectInfo("h", 1, "ann")
    with pytest.raises(ValueError, match="name"):
        validate("h:1", "  ")
    with pytest.raises(ValueError, match="longer"):
        validate("h:1", "x" * 65)


def test_dialog_remembers_between_runs(qtbot: QtBot, tmp_path: Path) -> None:
    settings = QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)
    first = ConnectDialog(settings)
    qtbot.addWidget(first)
    assert first.server.text() == DEFAULT_SERVER and first.name.text() == ""
    first.server.setText("voice.example.org:8080")
    first.name.setText("alice")
    first.accept()
    assert first.result() == QDialog.DialogCode.Accepted
    assert first.info == ConnectInfo("voice.example.org", 8080, "alice")

    again = ConnectDialog(QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(again)
    assert again.server.text() == "voice.example.org:8080"
    assert again.name.text() == "alice"


def test_dialog_stays_open_on_bad_input(qtbot: QtBot, tmp_path: Path) -> None:
    settings = QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)
    dialog = ConnectDialog(settings)
    qtbot.addWidget(dialog)
    dialog.server.setText("no-port")
    dialog.name.setText("bob")
    dialog.accept()
    assert dialog.info is None and dialog.result() != QDialog.DialogCode.Accepted
    assert "HOST:PORT" in dialog.error.text()
    assert settings.value("name") is None


def test_the_password_is_asked_hidden_and_never_remembered(qtbot: QtBot, tmp_path: Path) -> None:
    path = str(tmp_path / "ui.ini")
    dialog = ConnectDialog(QSettings(path, QSettings.Format.IniFormat))
    qtbot.addWidget(dialog)
    assert dialog.password.echoMode() == dialog.password.EchoMode.Password
    dialog.name.setText("carol")
    dialog.password.setText("s3cret")
    dialog.accept()
    assert dialog.info == ConnectInfo("127.0.0.1", 8080, "carol", "s3cret")
    assert "s3cret" not in repr(dialog.info)
    assert "s3cret" not in Path(path).read_text()
    again = ConnectDialog(QSettings(path, QSettings.Format.IniFormat))
    qtbot.addWidget(again)
    assert again.password.text() == ""


def test_validate_takes_a_list_of_servers() -> None:
    info = validate(" a.example:8080, [::1]:9000 ", "ann")
    assert info == ConnectInfo("a.example", 8080, "ann", fallbacks=(("::1", 9000),))
    assert info.servers == [("a.example", 8080), ("::1", 9000)]
    with pytest.raises(ValueError, match="server 2 of 2: expected HOST:PORT"):
        validate("a:8080,b", "ann")
    with pytest.raises(ValueError, match="listed twice"):
        validate("a:8080,a:8080", "ann")


def test_the_dialog_checks_a_list_as_it_is_typed_and_remembers_it(
    qtbot: QtBot, tmp_path: Path
) -> None:
    from pipeline.core.pins import PinFile
    from ui.favourites import Favourites

    path = str(tmp_path / "ui.ini")
    pins = PinFile(tmp_path / "pins.json")
    pins.pin("a.example:8080", "AB:CD")
    settings = QSettings(path, QSettings.Format.IniFormat)
    dialog = ConnectDialog(settings, favourites=Favourites(settings, pins))
    qtbot.addWidget(dialog)
    dialog.name.setText("ann")
    dialog.server.setText("a.example:8080,b.example")  # typed so far: the second lacks a port
    assert "server 2 of 2" in dialog.error.text() and not dialog.error.isHidden()
    dialog.server.setText("a.example:8080, b.example:8080")
    assert dialog.error.isHidden()
    cert = dialog.certificate.text()
    assert "a.example:8080: pinned AB:CD" in cert and "b.example:8080: not seen yet" in cert
    dialog.accept()
    assert dialog.info == ConnectInfo("a.example", 8080, "ann", fallbacks=(("b.example", 8080),))
    again = ConnectDialog(QSettings(path, QSettings.Format.IniFormat))
    qtbot.addWidget(again)
    assert again.server.text() == "a.example:8080,b.example:8080"
