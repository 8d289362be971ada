"""ui/volumes.py: volumes and local mutes by server and name, without a window."""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import QSettings

from relay.protocol.messages import UserInfo
from ui.volumes import UserVolumes, Volume


def settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)


def test_volumes_are_remembered_per_server_and_name(tmp_path: Path) -> None:
    vols = UserVolumes(settings(tmp_path))
    vols.set("h:1", "bob", Volume(40))
    vols.set("h:1", "cy/x", Volume(150, muted=True))
    again = UserVolumes(settings(tmp_path))
    assert again.get("h:1", "bob") == Volume(40) and again.get("h:2", "bob") == Volume()
    assert again.get("h:1", "cy/x").gain == 0.0
    users = [UserInfo(1, "me", "L"), UserInfo(7, "bob", "L"), UserInfo(8, "dan", "L")]
    assert again.gains("h:1", users, me=1) == {7: 0.4}
    again.set("h:1", "bob", Volume())  # back to normal: forgotten
    assert UserVolumes(settings(tmp_path)).gains("h:1", users, me=1) == {}


def test_a_broken_or_huge_store_is_survived(tmp_path: Path) -> None:
    s = settings(tmp_path)
    s.setValue("user_volumes", '{"h:1\\nbob": [999, false], "bad": "x"')
    assert UserVolumes(s).get("h:1", "bob") == Volume()  # not JSON: nothing
    s.setValue("user_volumes", '{"h:1\\nbob": [999, false], "bad": "x"}')
    assert UserVolumes(s).get("h:1", "bob") == Volume(200)  # clamped; the bad entry skipped
    vols = UserVolumes(s, max_remembered=10)
    for i in range(15):
        vols.set("h:1", f"u{i}", Volume(50))
    assert vols.get("h:1", "u4") == Volume() and vols.get("h:1", "u5").percent == 50
