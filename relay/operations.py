"""What the operator changes on a running relay: channels, bans, the configuration.

:class:`Operations` keeps the relay's operator-owned state (the channels the
configuration declares and those made at run time, the bans, the database and
the configuration source) and the changes to it: each one stored first (when
there is a database), then installed in the session table, control server or
router of its :class:`relay.server.Relay`, whose asyncio thread calls all of
this. :mod:`relay.admin` decides what a request means; this module carries it
out. A reload (SIGHUP) applies the fields of :data:`RELOADABLE` and logs the
others as needing a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import fields
from typing import TYPE_CHECKING

from relay import log_format
from relay.bans import Ban
from relay.protocol.messages import ChannelInfo
from relay.store import Store

if TYPE_CHECKING:
    from relay.server import ConfigSource, Relay

log = logging.getLogger("relay")

BAN_PURGE_EVERY = 60.0  # seconds between removals of expired bans from the list and store
# RelayConfig fields a reload applies while serving; any other change needs a restart.
RELOADABLE = frozenset(
    {
        "channels", "grace", "auth_timeout", "stats_interval", "max_clients", "voice_limit",
        "per_address_connections", "per_address_sessions", "connect_rate", "connect_burst",
        "address_chat_rate", "address_chat_burst", "address_join_rate", "address_join_burst",
        "log_level", "obfuscate_addresses", "welcome_text",
    }
)  # fmt: skip


def _infos(channels: list[ChannelInfo | str]) -> list[ChannelInfo]:
    return [c if isinstance(c, ChannelInfo) else ChannelInfo(c) for c in channels]


class Operations:
    """The operator's state of ``relay`` and the changes to it."""

    def __init__(
        self, relay: Relay, store: Store | None = None, source: ConfigSource | None = None
    ) -> None:
        self.relay = relay
        self.store = store
        self.source = source
        self.config_channels = _infos(relay.config.channels)
        declared = {c.name for c in self.config_channels}
        stored = store.channels() if store is not None else []
        self.admin_channels = [c for c in stored if c.name not in declared]
        self._ban_ids = 0  # without a store, bans are numbered here

    def channels(self) -> list[ChannelInfo]:
        """Every channel: the configuration's, then those made at run time."""
        return self.config_channels + self.admin_channels

    def load_bans(self) -> None:
        for ban in self.store.bans() if self.store is not None else ():
            self.relay.control.bans.add(ban)

    # --- channels --------------------------------------------------------------------------

    def _install_channels(self) -> None:
        relay = self.relay
        relay.control.apply(relay.sessions.set_channels(self.channels()))

    def set_admin_channels(self, channels: list[ChannelInfo]) -> None:
        """The channels made at run time are now ``channels``: stored, then installed."""
        if self.store is not None:
            self.store.save_channels(channels)
        self.admin_channels = channels
        self._install_channels()

    def rename_admin_channel(self, index: int, new: str) -> None:
        """Rename the ``index``-th channel made at run time, its members with it."""
        old = self.admin_channels[index]
        channels = list(self.admin_channels)
        channels[index] = ChannelInfo(new, old.description, old.max_users)
        if self.store is not None:
            self.store.save_channels(channels)
        self.admin_channels = channels
        self.relay.control.apply(self.relay.sessions.rename_channel(old.name, new))

    # --- bans ------------------------------------------------------------------------------

    def add_ban(
        self, address: str, name: str, reason: str, now: float, expires: float | None
    ) -> Ban:
        if self.store is not None:
            ban = self.store.add_ban(address, name, reason, now, expires)
        else:
            self._ban_ids += 1
            ban = Ban(self._ban_ids, address, name, reason, now, expires)
        self.relay.control.bans.add(ban)
        return ban

    def remove_ban(self, ban_id: int) -> Ban | None:
        ban = self.relay.control.bans.remove(ban_id)
        if ban is not None and self.store is not None:
            self.store.remove_ban(ban_id)
        return ban

    async def ban_timer(self) -> None:
        """Forget expired bans, every BAN_PURGE_EVERY seconds (they stop matching at once)."""
        while True:
            await asyncio.sleep(BAN_PURGE_EVERY)
            for ban in self.relay.control.bans.expired(time.time()):
                self.remove_ban(ban.id)
                log.info("ban %d expired", ban.id, extra={"event": "unban"})

    # --- the configuration -----------------------------------------------------------------

    def reload(self) -> dict[str, list[str]]:
        """Read the configuration again and apply what can change while serving.

        Returns the changed fields: ``applied`` and ``restart`` (logged, not applied).
        Raises ConfigError (a ValueError) and changes nothing if it cannot be used.
        """
        if self.source is None:
            return {"applied": [], "restart": []}
        new = self.source.config()
        old = self.relay.config
        changed = [
            f.name for f in fields(type(old)) if getattr(old, f.name) != getattr(new, f.name)
        ]
        applied = [k for k in changed if k in RELOADABLE]
        restart = [k for k in changed if k not in RELOADABLE]
        for key in applied:
            setattr(old, key, getattr(new, key))
        self._apply(set(applied))
        log.info(
            "reloaded: applied %s; needs a restart: %s",
            ", ".join(applied) or "nothing", ", ".join(restart) or "nothing",
            extra={"event": "reload"},
        )  # fmt: skip
        return {"applied": applied, "restart": restart}

    def _apply(self, keys: set[str]) -> None:
        relay = self.relay
        cfg = relay.config
        lim = relay.control.limits
        lim.auth_timeout = cfg.auth_timeout
        lim.max_connections = cfg.max_clients
        lim.per_address_connections = cfg.per_address_connections
        lim.per_address_sessions = cfg.per_address_sessions
        lim.connect_rate = cfg.connect_rate
        lim.connect_burst = cfg.connect_burst
        lim.address_chat_rate = cfg.address_chat_rate
        lim.address_chat_burst = cfg.address_chat_burst
        lim.address_join_rate = cfg.address_join_rate
        lim.address_join_burst = cfg.address_join_burst
        relay.sessions.grace = cfg.grace
        relay.sessions.max_sessions = cfg.max_clients
        relay.sessions.max_per_source = cfg.per_address_sessions
        relay.control.welcome_text = cfg.welcome_text
        log_format.set_level(cfg.log_level)
        log_format.set_obfuscation(cfg.obfuscate_addresses)
        if "voice_limit" in keys:
            relay.set_voice_limit(cfg.voice_limit)
        if "channels" in keys:
            self.config_channels = _infos(cfg.channels)
            declared = {c.name for c in self.config_channels}
            self.admin_channels = [c for c in self.admin_channels if c.name not in declared]
            self._install_channels()

    def on_sighup(self) -> None:
        try:
            self.reload()
        except ValueError as exc:
            log.error("reload refused, the running configuration stays: %s", exc)
