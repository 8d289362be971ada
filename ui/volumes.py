"""Each other user's volume and local mute, remembered per user name and server. No widgets.

The relay gives a user a new id on every session, so what the listener chose is
kept by (server, name) in QSettings, as one JSON map, and turned into gains by
user id for the decode stage whenever the roster changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from PyQt6.QtCore import QSettings

from pipeline.ipc import events as ev
from relay.protocol.messages import UserInfo

KEY = "user_volumes"
MAX_PERCENT = round(ev.MAX_GAIN * 100)  # 200 %
MAX_REMEMBERED = 1000  # users remembered across servers; the oldest choice goes first


@dataclass(frozen=True, slots=True)
class Volume:
    percent: int = 100
    muted: bool = False  # muted here only: nobody else is told

    @property
    def gain(self) -> float:
        return 0.0 if self.muted else self.percent / 100.0


class UserVolumes:
    def __init__(self, settings: QSettings, max_remembered: int = MAX_REMEMBERED) -> None:
        self.settings = settings
        self.max_remembered = max_remembered
        self._by_user: dict[str, Volume] = {}
        self.load()

    @staticmethod
    def _key(server: str, name: str) -> str:
        return f"{server}\n{name}"

    def load(self) -> None:
        try:
            raw = json.loads(str(self.settings.value(KEY, "{}")))
        except ValueError:
            raw = {}
        self._by_user = {}
        if isinstance(raw, dict):
            for key, value in raw.items():
                if (
                    isinstance(key, str)
                    and isinstance(value, list)
                    and len(value) == 2
                    and isinstance(value[0], int)
                    and isinstance(value[1], bool)
                ):
                    self._by_user[key] = Volume(min(MAX_PERCENT, max(0, value[0])), value[1])

    def get(self, server: str, name: str) -> Volume:
        return self._by_user.get(self._key(server, name), Volume())

    def set(self, server: str, name: str, volume: Volume) -> None:
        """Remember ``volume`` for ``name`` on ``server`` (the default is forgotten)."""
        key = self._key(server, name)
        self._by_user.pop(key, None)
        if volume != Volume():
            self._by_user[key] = volume  # last: the newest choice
        while len(self._by_user) > self.max_remembered:
            del self._by_user[next(iter(self._by_user))]
        self.settings.setValue(
            KEY, json.dumps({k: [v.percent, v.muted] for k, v in self._by_user.items()})
        )
        self.settings.sync()

    def gains(self, server: str, users: list[UserInfo], me: int) -> dict[int, float]:
        """The decode stage's gains for ``users`` (everyone but ``me``): the set ones only."""
        out = {}
        for u in users:
            if u.user_id != me:
                gain = self.get(server, u.name).gain
                if gain != 1.0:
                    out[u.user_id] = gain
        return out
