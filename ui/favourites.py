"""The favourite servers: a list kept in QSettings, apart from any widget.

A favourite is a label, a server address, the user name to connect as and,
only if the user ticked "save password", the server's password (QSettings
keeps it in plain text in the user's settings file, which the dialog says).
The certificate a server showed is pinned elsewhere, by address, on first
connect (pipeline/core/pins.py); :meth:`Favourites.pinned` reads it for display.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from PyQt6.QtCore import QSettings

from pipeline.client.config import servers_text
from pipeline.core.pins import PinFile, PinsUnreadable
from ui.connect import ConnectInfo, validate

GROUP = "favourites"
MAX_FAVOURITES = 50


@dataclass(frozen=True, slots=True)
class Favourite:
    label: str
    server: str  # HOST:PORT, or several comma-separated (tried in turn)
    name: str
    password: str = field(default="", repr=False)

    def info(self) -> ConnectInfo:
        """What to connect with; ValueError (in a user's words) if it cannot be used."""
        return validate(self.server, self.name, self.password)


class Favourites:
    """The list, in the user's order, loaded from and saved to ``settings``."""

    def __init__(self, settings: QSettings, pins: PinFile | None = None) -> None:
        self.settings = settings
        self.pins = pins or PinFile()
        self.items: list[Favourite] = []
        self.load()

    def load(self) -> None:
        self.items = []
        count = self.settings.beginReadArray(GROUP)
        for i in range(min(count, MAX_FAVOURITES)):
            self.settings.setArrayIndex(i)
            fav = Favourite(
                str(self.settings.value("label", "")),
                str(self.settings.value("server", "")),
                str(self.settings.value("name", "")),
                str(self.settings.value("password", "")),
            )
            try:
                fav.info()
            except ValueError:
                continue  # an entry edited by hand into something unusable: skipped
            self.items.append(fav)
        self.settings.endArray()

    def save(self) -> None:
        self.settings.remove(GROUP)
        self.settings.beginWriteArray(GROUP, len(self.items))
        for i, fav in enumerate(self.items):
            self.settings.setArrayIndex(i)
            self.settings.setValue("label", fav.label)
            self.settings.setValue("server", fav.server)
            self.settings.setValue("name", fav.name)
            if fav.password:
                self.settings.setValue("password", fav.password)
        self.settings.endArray()
        self.settings.sync()

    def put(self, fav: Favourite) -> Favourite:
        """Add ``fav``, or replace the favourite of the same label; saved at once.
        ValueError (the user's words) for a server or name that cannot be used."""
        info = fav.info()
        fav = replace(
            fav,
            label=fav.label.strip() or servers_text(info.servers),
            server=servers_text(info.servers),
        )
        for i, old in enumerate(self.items):
            if old.label == fav.label:
                self.items[i] = fav
                break
        else:
            if len(self.items) >= MAX_FAVOURITES:
                raise ValueError(f"at most {MAX_FAVOURITES} favourites: delete one first")
            self.items.append(fav)
        self.save()
        return fav

    def remove(self, label: str) -> None:
        self.items = [f for f in self.items if f.label != label]
        self.save()

    def find(self, label: str) -> Favourite | None:
        return next((f for f in self.items if f.label == label), None)

    def pinned(self, server: str) -> str | None:
        """The certificate fingerprint pinned for ``server`` (pins.pin_key), if any (none
        shown while the pins file cannot be read: connecting says why)."""
        try:
            return self.pins.load().get(server.strip())
        except PinsUnreadable:
            return None
