"""ui/favourites.py: the favourites list in QSettings, without a window."""

from __future__ import annotations

from pathlib import Path

import pytest
from PyQt6.QtCore import QSettings

from pipeline.core.pins import PinFile
from ui.connect import ConnectInfo
from ui.favourites import Favourite, Favourites


def settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)


def test_favourites_are_kept_in_order_and_replaced_by_label(tmp_path: Path) -> None:
    favs = Favourites(settings(tmp_path), PinFile(tmp_path / "pins.json"))
    favs.put(Favourite("Home", " home.example:8080 ", "ann"))
    favs.put(Favourite("", "work.example:9000", "ann", "s3cret"))  # labelled by address
    favs.put(Favourite("Home", "home.example:8081", "ann-2"))
    again = Favourites(settings(tmp_path), PinFile(tmp_path / "pins.json"))
    assert [f.label for f in again.items] == ["Home", "work.example:9000"]
    home = again.find("Home")
    assert home is not None and home.info() == ConnectInfo("home.example", 8081, "ann-2")
    work = again.find("work.example:9000")
    assert work is not None and work.password == "s3cret"
    assert "s3cret" not in repr(work)
    again.remove("Home")
    assert [f.label for f in Favourites(settings(tmp_path)).items] == ["work.example:9000"]


def test_an_unusable_favourite_is_refused_in_words(tmp_path: Path) -> None:
    favs = Favourites(settings(tmp_path))
    with pytest.raises(ValueError, match="HOST:PORT"):
        favs.put(Favourite("x", "no-port", "ann"))
    with pytest.raises(ValueError, match="name"):
        favs.put(Favourite("x", "h:1", " "))
    assert favs.items == []


def test_a_hand_edited_bad_entry_is_skipped(tmp_path: Path) -> None:
    s = settings(tmp_path)
    s.beginWriteArray("favourites", 2)
    s.setArrayIndex(0)
    s.setValue("label", "bad")
    s.setValue("server", "nowhere")
    s.setArrayIndex(1)
    s.setValue("label", "ok")
    s.setValue("server", "h:1")
    s.setValue("name", "ann")
    s.endArray()
    s.sync()
    assert [f.label for f in Favourites(settings(tmp_path)).items] == ["ok"]


def test_the_pinned_certificate_is_shown_by_address(tmp_path: Path) -> None:
    pins = PinFile(tmp_path / "pins.json")
    pins.pin("h:1", "AB:CD")
    favs = Favourites(settings(tmp_path), pins)
    assert favs.pinned("h:1") == "AB:CD" and favs.pinned("h:2") is None


def test_a_favourite_may_hold_several_servers(tmp_path: Path) -> None:
    favs = Favourites(settings(tmp_path), PinFile(tmp_path / "pins.json"))
    fav = favs.put(Favourite("", " a.example:8080 ,[::1]:9000", "ann"))
    assert fav.server == fav.label == "a.example:8080,[::1]:9000"
    (again,) = Favourites(settings(tmp_path)).items
    assert again.info() == ConnectInfo("a.example", 8080, "ann", fallbacks=(("::1", 9000),))
    with pytest.raises(ValueError, match="server 2 of 2"):
        favs.put(Favourite("x", "a.example:8080,nowhere", "ann"))
