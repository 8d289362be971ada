"""relay/operations.py: channels, bans and reloads on an in-process relay (no sockets bound)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from relay.config_file import ConfigError
from relay.operations import Operations
from relay.protocol.messages import ChannelInfo
from relay.router import VoiceLimit
from relay.server import Relay, RelayConfig
from relay.store import Store


class Source:
    """A configuration source whose next config() the test sets."""

    def __init__(self, config: RelayConfig) -> None:
        self.next: RelayConfig | Exception = config

    def config(self) -> RelayConfig:
        if isinstance(self.next, Exception):
            raise self.next
        return self.next

    def set_setting(self, key: str, text: str) -> Any:
        return text

    def unset_setting(self, key: str) -> bool:
        return False

    def runtime_settings(self) -> dict[str, Any]:
        return {}


def config(**over: Any) -> RelayConfig:
    base: dict[str, Any] = {"channels": [ChannelInfo("Lobby"), ChannelInfo("AFK")]}
    return RelayConfig(**(base | over))


def run(fn: Any) -> Any:
    async def main() -> Any:
        return fn()

    return asyncio.run(main())


def test_a_reload_applies_what_it_can_and_names_the_rest() -> None:
    source = Source(config())
    relay = Relay(config(), source=source)
    source.next = config(
        channels=[ChannelInfo("Lobby"), ChannelInfo("Ops", "", 2)],
        grace=5.0,
        max_clients=10,
        voice_limit=VoiceLimit(100.0, 100_000.0, 1.0),
        port=9999,
        udp_workers=2,
    )
    out = run(relay.operations.reload)
    assert out["applied"] == ["channels", "grace", "max_clients", "voice_limit"]
    assert out["restart"] == ["port", "udp_workers"]
    assert list(relay.sessions.channels) == ["Lobby", "Ops"]
    assert relay.sessions.info["Ops"].max_users == 2
    assert relay.sessions.grace == 5.0 and relay.control.limits.max_connections == 10
    assert relay.router.limit == VoiceLimit(100.0, 100_000.0, 1.0)
    assert relay.tunnel is not None and relay.tunnel.limit == relay.router.limit  # TCP's too
    assert relay.config.port == 8080  # not applied: needs a restart


def test_a_reload_that_fails_changes_nothing() -> None:
    source = Source(config())
    relay = Relay(config(), source=source)
    source.next = ConfigError("relay.toml: key 'grace': must be a positive number")
    with pytest.raises(ConfigError):
        run(relay.operations.reload)
    assert list(relay.sessions.channels) == ["Lobby", "AFK"]
    run(relay.operations.on_sighup)  # logged, not raised


def test_run_time_channels_follow_the_declared_ones_and_are_stored(tmp_path: Path) -> None:
    with Store(tmp_path / "relay.db") as store:
        relay = Relay(config(), store=store)
        ops = relay.operations
        run(lambda: ops.set_admin_channels([ChannelInfo("Quiz", "q", 3)]))
        assert list(relay.sessions.channels) == ["Lobby", "AFK", "Quiz"]
        run(lambda: ops.rename_admin_channel(0, "Trivia"))
        assert store.channels() == [ChannelInfo("Trivia", "q", 3)]
    with Store(tmp_path / "relay.db") as store:
        # Declared by the file now: the file's wins, the stored one is not listed twice.
        again = Relay(config(channels=[ChannelInfo("Trivia")]), store=store)
        assert again.operations.channels() == [ChannelInfo("Trivia")]


def test_bans_are_numbered_without_a_store_and_kept_with_one(tmp_path: Path) -> None:
    relay = Relay(config())
    now = time.time()
    a = relay.operations.add_ban("10.0.0.1", "", "", now, None)
    b = relay.operations.add_ban("", "x", "", now, now - 1)
    assert (a.id, b.id) == (1, 2) and len(relay.control.bans) == 2
    assert relay.operations.remove_ban(1) == a and relay.operations.remove_ban(1) is None
    with Store(tmp_path / "relay.db") as store:
        kept = Relay(config(), store=store)
        ban = kept.operations.add_ban("10.0.0.0/8", "", "spam", now, None)
    with Store(tmp_path / "relay.db") as store:
        back = Relay(config(), store=store)
        assert list(back.control.bans) == [ban]


def test_without_a_source_a_reload_is_a_no_op() -> None:
    relay = Relay(config())
    assert isinstance(relay.operations, Operations)
    assert run(relay.operations.reload) == {"applied": [], "restart": []}
