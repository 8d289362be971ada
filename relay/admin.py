"""The operator's actions on a running relay: what each admin request does.

:class:`Admin` carries out one parsed request (:mod:`relay.admin_protocol`) on the
relay's session table, control server, bans and store, and returns the reply's
result or raises :class:`~relay.admin_protocol.AdminError` with a line the
operator can act on. Every action that changes something is logged (``event``
``admin``, ``action`` the verb). It runs on the relay's asyncio thread, which
owns everything it touches; the socket adapter is :mod:`relay.admin_server`.

Channels: those the configuration declares (file or flags) are the file's: they
come and go with it (SIGHUP) and are not changed here. Channels made here are
added after them and kept in the database (in memory without one).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from relay import admin_protocol as ap
from relay.admin_protocol import AdminError
from relay.bans import Ban, parse_network
from relay.protocol.messages import ChannelInfo
from relay.session_table import Session
from relay.store import StoreError

if TYPE_CHECKING:
    from relay.server import Relay

log = logging.getLogger("relay.admin")

MAX_WINDOW = 10.0  # seconds a status request may ask the rate to be measured over


class Admin:
    """Carries out admin requests on ``relay``."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.started = time.time()

    async def handle(self, req: ap.Request) -> Any:
        """The result of ``req``; AdminError if it cannot be done."""
        if isinstance(req, ap.Status):
            return await self.status(req.window)
        method = getattr(self, "_" + req.CMD)
        try:
            return method(req)
        except StoreError as exc:  # the disk filled up, the file went read-only...
            log.error("admin %s: the database refused the change: %s", req.CMD, exc)
            raise AdminError(f"the database refused the change: {exc}") from None

    def _log(self, action: str, detail: str, **fields: Any) -> None:
        log.info(
            "admin %s: %s",
            action,
            detail,
            extra={"event": "admin", "action": action, "detail": detail, **fields},
        )

    def _user(self, ref: str) -> Session:
        session = self.relay.sessions.find(ref)
        if session is None:
            raise AdminError(f"no user {ref!r} (give a user id or an exact name; see 'users')")
        return session

    # --- reading ------------------------------------------------------------------------

    async def status(self, window: float) -> dict[str, Any]:
        if not 0 < window <= MAX_WINDOW:
            raise AdminError(f"window must be over 0 and at most {MAX_WINDOW:g} seconds")
        relay = self.relay
        before, t0 = relay.forwarded_total(), time.monotonic()
        await asyncio.sleep(window)
        after, t1 = relay.forwarded_total(), time.monotonic()
        return {
            "up": True,
            "uptime_s": round(time.time() - self.started, 1),
            "sessions": len(relay.sessions),
            "connections": relay.control.connection_count,
            "channels": len(relay.sessions.channels),
            "forwarded_per_s": round((after - before) / (t1 - t0), 1),
            "forwarded_total": after,
            "port": relay.port,
        }

    def _users(self, _req: ap.Users) -> list[dict[str, Any]]:
        return [
            {
                "user_id": s.user_id,
                "name": s.name,
                "channel": s.channel,
                "address": s.source,
                "connected": s.conn is not None,
                "voice": s.udp_addr is not None,
                "server_muted": s.server_muted,
            }
            for s in sorted(self.relay.sessions, key=lambda s: s.user_id)
        ]

    def _channels(self, _req: ap.Channels) -> list[dict[str, Any]]:
        t = self.relay.sessions
        declared = {c.name for c in self.relay.operations.config_channels}
        return [
            {
                "name": info.name,
                "description": info.description,
                "max_users": info.max_users,
                "members": len(t.channels[info.name]),
                "from": "config" if info.name in declared else "admin",
            }
            for info in t.info.values()
        ]

    def _bans(self, _req: ap.Bans) -> list[dict[str, Any]]:
        now = time.time()
        return [_ban_dict(b) for b in self.relay.control.bans if b.active(now)]

    def _settings(self, _req: ap.Settings) -> dict[str, Any]:
        return (
            self.relay.operations.source.runtime_settings() if self.relay.operations.source else {}
        )

    # --- users --------------------------------------------------------------------------

    def _kick(self, req: ap.Kick) -> dict[str, Any]:
        session = self._user(req.user)
        reason = req.reason or "kicked by the operator"
        self._log(
            "kick",
            f"user {session.user_id} {session.name!r}: {reason}",
            user_id=session.user_id,
            user=session.name,
            address=self.relay.control.address_of(session),
        )
        self.relay.control.apply(self.relay.sessions.kick(session, "kicked", reason))
        return {"user_id": session.user_id, "name": session.name}

    def _mute(self, req: ap.Mute) -> dict[str, Any]:
        return self._server_mute(req.user, True)

    def _unmute(self, req: ap.Unmute) -> dict[str, Any]:
        return self._server_mute(req.user, False)

    def _server_mute(self, ref: str, muted: bool) -> dict[str, Any]:
        session = self._user(ref)
        action = "mute" if muted else "unmute"
        changed = session.server_muted != muted
        if changed:
            self._log(
                action,
                f"user {session.user_id} {session.name!r}",
                user_id=session.user_id,
                user=session.name,
            )
            self.relay.control.apply(self.relay.sessions.server_mute(session, muted))
        return {
            "user_id": session.user_id,
            "name": session.name,
            "server_muted": muted,
            "changed": changed,
        }

    def _ban(self, req: ap.Ban) -> dict[str, Any]:
        if req.duration < 0:
            raise AdminError("duration must be 0 (for ever) or more seconds")
        address, name = req.address, req.name
        if req.user:
            address = self._user(req.user).source
        if address:
            try:
                parse_network(address)
            except ValueError as exc:
                raise AdminError(str(exc)) from None
        if not address and not name:
            raise AdminError("a ban needs a user, an address or a name")
        now = time.time()
        expires = now + req.duration if req.duration else None
        ban = self.relay.operations.add_ban(address, name, req.reason, now, expires)
        # Everyone it covers goes now; their clients cannot come back while it holds.
        covered = [
            s
            for s in list(self.relay.sessions)
            if self.relay.control.bans.match(s.source, s.name, now) is ban
        ]
        err = _ban_error(ban)
        for s in covered:
            self.relay.control.apply(self.relay.sessions.kick(s, "banned", err))
        self._log("ban", f"ban {ban.id} {_describe(ban)}; ended {len(covered)} session(s)")
        return {**_ban_dict(ban), "kicked": [s.user_id for s in covered]}

    def _unban(self, req: ap.Unban) -> dict[str, Any]:
        ban = self.relay.operations.remove_ban(req.id)
        if ban is None:
            raise AdminError(f"no ban {req.id} (see 'bans')")
        self._log("unban", f"ban {ban.id} {_describe(ban)}")
        return _ban_dict(ban)

    def _move(self, req: ap.Move) -> dict[str, Any]:
        session = self._user(req.user)
        if req.channel not in self.relay.sessions.channels:
            raise AdminError(f"no channel {req.channel!r}")
        self._log(
            "move",
            f"user {session.user_id} {session.name!r} to {req.channel!r}",
            user_id=session.user_id,
            channel=req.channel,
        )
        self.relay.control.apply(self.relay.sessions.move(session, req.channel))
        return {"user_id": session.user_id, "channel": req.channel}

    def _say(self, req: ap.Say) -> dict[str, Any]:
        channel = req.channel or None
        try:
            actions = self.relay.sessions.say(req.text, time.time(), channel)
        except KeyError:
            raise AdminError(f"no channel {req.channel!r}") from None
        except ValueError as exc:
            raise AdminError(str(exc)) from None
        self._log("say", f"to {channel or 'everyone'!r}: {req.text!r}")
        self.relay.control.apply(actions)
        return {"to": channel or "everyone"}

    # --- channels -----------------------------------------------------------------------

    def _own_channel(self, name: str) -> int:
        """The index of ``name`` among the channels made here, or why it cannot change."""
        if any(c.name == name for c in self.relay.operations.config_channels):
            raise AdminError(
                f"channel {name!r} is declared in the configuration: change it there "
                "and reload (SIGHUP)"
            )
        for i, c in enumerate(self.relay.operations.admin_channels):
            if c.name == name:
                return i
        raise AdminError(f"no channel {name!r}")

    def _channel_add(self, req: ap.ChannelAdd) -> dict[str, Any]:
        if req.name in self.relay.sessions.channels:
            raise AdminError(f"there is a channel {req.name!r} already")
        info = ChannelInfo(req.name, req.description, req.max_users)
        self.relay.operations.set_admin_channels([*self.relay.operations.admin_channels, info])
        self._log("channel_add", repr(req.name), channel=req.name)
        return {"name": req.name}

    def _channel_edit(self, req: ap.ChannelEdit) -> dict[str, Any]:
        i = self._own_channel(req.name)
        channels = list(self.relay.operations.admin_channels)
        old = channels[i]
        channels[i] = ChannelInfo(
            old.name,
            old.description if req.description is None else req.description,
            old.max_users if req.max_users is None else req.max_users,
        )
        self.relay.operations.set_admin_channels(channels)
        self._log("channel_edit", repr(req.name), channel=req.name)
        return {"name": req.name}

    def _channel_rename(self, req: ap.ChannelRename) -> dict[str, Any]:
        i = self._own_channel(req.name)
        if req.new_name in self.relay.sessions.channels:
            raise AdminError(f"there is a channel {req.new_name!r} already")
        self.relay.operations.rename_admin_channel(i, req.new_name)
        self._log("channel_rename", f"{req.name!r} to {req.new_name!r}", channel=req.new_name)
        return {"name": req.new_name}

    def _channel_remove(self, req: ap.ChannelRemove) -> dict[str, Any]:
        i = self._own_channel(req.name)
        channels = list(self.relay.operations.admin_channels)
        del channels[i]
        members = len(self.relay.sessions.channels[req.name])
        self.relay.operations.set_admin_channels(channels)
        self._log("channel_remove", f"{req.name!r} ({members} member(s) moved)", channel=req.name)
        return {"name": req.name, "moved": members}

    # --- settings -----------------------------------------------------------------------

    def _set(self, req: ap.Set) -> dict[str, Any]:
        source = self._source()
        try:
            value = source.set_setting(req.key, req.value)
            changes = self.relay.operations.reload()
        except ValueError as exc:  # ConfigError included
            source.unset_setting(req.key)
            raise AdminError(str(exc)) from None
        self._log("set", f"{req.key} = {value!r}")
        return {"key": req.key, "value": value, **changes}

    def _unset(self, req: ap.Unset) -> dict[str, Any]:
        source = self._source()
        if not source.unset_setting(req.key):
            raise AdminError(f"{req.key!r} was not set at run time")
        changes = self.relay.operations.reload()
        self._log("unset", req.key)
        return {"key": req.key, **changes}

    def _reload(self, _req: ap.Reload) -> dict[str, Any]:
        try:
            return self.relay.operations.reload()
        except ValueError as exc:
            raise AdminError(f"kept the running configuration: {exc}") from None

    def _source(self) -> Any:
        if self.relay.operations.source is None:
            raise AdminError("this relay was started without a configuration source")
        return self.relay.operations.source


def _ban_dict(ban: Ban) -> dict[str, Any]:
    return {
        "id": ban.id,
        "address": ban.address,
        "name": ban.name,
        "reason": ban.reason,
        "created": ban.created,
        "expires": ban.expires,
    }


def _describe(ban: Ban) -> str:
    what = " and ".join(x for x in (ban.address, repr(ban.name) if ban.name else "") if x)
    until = "for ever" if ban.expires is None else f"for {ban.expires - ban.created:.0f} s"
    return f"{what} {until}" + (f": {ban.reason}" if ban.reason else "")


def _ban_error(ban: Ban) -> str:
    return "banned" + (f": {ban.reason}" if ban.reason else "")
