"""relay/admin.py: the operator's actions, on a real relay process over its admin socket."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay import admin_protocol as ap
from relay.admin_cli import call
from relay.probe import ProbeClient
from relay.protocol.messages import (
    Auth,
    ChannelInfo,
    ChannelList,
    Chat,
    Error,
    UserJoined,
    UserLeft,
    UserState,
)
from tests.test_relay_server import HOST, RelayProc, start_relay, stop_relay


class Operated:
    """A relay started with a database and an admin socket in ``tmp``."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        self.tmp = tmp
        self.sock = str(tmp / "admin.sock")
        self.extra = extra
        self.relay: RelayProc | None = None

    def start(self) -> RelayProc:
        self.relay = start_relay(
            "--admin-socket", self.sock, "--database", str(self.tmp / "relay.db"), *self.extra
        )
        return self.relay

    def stop(self) -> str:
        assert self.relay is not None
        log = stop_relay(self.relay)
        self.relay = None
        return log

    @property
    def relay_port(self) -> int:
        assert self.relay is not None
        return self.relay.port

    def __call__(self, req: ap.Request) -> Any:
        return call(self.sock, req)

    def client(self, name: str, source: str | None = None) -> ProbeClient:
        assert self.relay is not None
        c = ProbeClient(HOST, self.relay.port, source=source)
        c.auth(name)
        c.register()
        return c


@pytest.fixture
def operated(tmp_path: Path) -> Iterator[Operated]:
    op = Operated(tmp_path)
    op.start()
    try:
        yield op
    finally:
        if op.relay is not None:
            op.stop()


class Talker:
    """Sends voice every 10 ms from ``client`` until stopped."""

    def __init__(self, client: ProbeClient) -> None:
        self.client = client
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        while not self._stop.wait(0.01):
            seq += 1
            try:
                self.client.send_voice(seq, b"voice")
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def hears(listener: ProbeClient, within: float) -> bool:
    return listener.recv_voice(within) is not None


def silent_after(listener: ProbeClient, within: float, quiet: float = 0.5) -> bool:
    """Voice stops reaching ``listener`` within ``within`` s and stays away ``quiet`` s."""
    deadline = time.monotonic() + within
    last = time.monotonic()
    while time.monotonic() < deadline + quiet:
        if listener.recv_voice(0.05) is not None:
            last = time.monotonic()
        elif time.monotonic() - last >= quiet:
            return last < deadline
    return False


def test_kick_stops_the_voice_within_a_second_and_ends_the_session(operated: Operated) -> None:
    alice, bob = operated.client("alice"), operated.client("bob")
    talker = Talker(alice)
    try:
        assert hears(bob, 2.0)
        t0 = time.monotonic()
        result = operated(ap.Kick("alice", "be nice"))
        assert result == {"user_id": alice.user_id, "name": "alice"}
        err = alice.recv_type(Error)
        assert isinstance(err, Error) and err.code == "kicked" and err.message == "be nice"
        assert alice.closed_by_relay(2.0)
        assert silent_after(bob, 1.0 - (time.monotonic() - t0))
        left = bob.recv_type(UserLeft)
        assert isinstance(left, UserLeft) and left.user_id == alice.user_id
    finally:
        talker.stop()
        alice.close()
        bob.close()
    users = operated(ap.Users())
    assert [u["name"] for u in users] == ["bob"]
    # A kick is not a ban: the same person can come straight back.
    again = operated.client("alice")
    again.close()


def test_a_server_mute_stops_the_voice_tells_everyone_and_an_unmute_restores_it(
    operated: Operated,
) -> None:
    alice, bob = operated.client("alice"), operated.client("bob")
    talker = Talker(bob)
    try:
        assert hears(alice, 2.0)
        result = operated(ap.Mute("bob"))
        assert result == {
            "user_id": bob.user_id, "name": "bob", "server_muted": True, "changed": True
        }  # fmt: skip
        for c in (alice, bob):  # bob too: his window says so
            state = c.recv_type(UserState)
            assert state == UserState(bob.user_id, server_muted=True)
        assert silent_after(alice, 1.0)
        assert [u["server_muted"] for u in operated(ap.Users())] == [False, True]
        assert operated(ap.Mute(str(bob.user_id)))["changed"] is False
        operated(ap.Unmute("bob"))
        assert alice.recv_type(UserState) == UserState(bob.user_id)
        assert hears(alice, 2.0)
    finally:
        talker.stop()
        alice.close()
        bob.close()
    with pytest.raises(ap.AdminError, match="no user 'carol'"):
        operated(ap.Mute("carol"))


def test_a_ban_ends_the_session_keeps_it_out_and_lets_it_in_once_expired(
    operated: Operated,
) -> None:
    troll = operated.client("troll", source="127.0.0.2")
    bob = operated.client("bob")
    talker = Talker(troll)
    try:
        assert hears(bob, 2.0)
        result = operated(ap.Ban(user="troll", duration=2.0, reason="spam"))
        assert result["address"] == "127.0.0.2" and result["kicked"] == [troll.user_id]
        err = troll.recv_type(Error)
        assert isinstance(err, Error) and err.code == "banned" and "spam" in err.message
        assert silent_after(bob, 1.0)
    finally:
        talker.stop()
        troll.close()
    # Refused at connect from that address, whatever the name; others still get in.
    with ProbeClient(HOST, operated.relay_port, source="127.0.0.2") as again:
        err = again.recv_type(Error)
        assert isinstance(err, Error) and err.code == "banned"
        assert again.closed_by_relay(2.0)
    operated.client("carol").close()
    (ban,) = operated(ap.Bans())
    assert ban["reason"] == "spam"
    time.sleep(max(0.0, ban["expires"] - time.time()) + 0.2)
    operated.client("troll", source="127.0.0.2").close()  # expired: let in
    assert operated(ap.Bans()) == []
    bob.close()


def test_a_name_ban_refuses_the_auth_and_look_alikes(operated: Operated) -> None:
    operated(ap.Ban(name="mallory", reason="impersonation"))
    for name in ("mallory", "ma\u200bllory", "m\u0430llory"):
        with ProbeClient(HOST, operated.relay_port) as c:
            c.send(Auth(name))
            err = c.recv_type(Error)
            assert isinstance(err, Error) and err.code in ("banned", "bad_name"), name
    operated.client("mal").close()
    (ban,) = operated(ap.Bans())
    assert operated(ap.Unban(ban["id"]))["name"] == "mallory"
    operated.client("mallory").close()
    with pytest.raises(ap.AdminError, match="no ban"):
        operated(ap.Unban(ban["id"]))


def test_channels_move_and_server_messages_reach_the_clients(operated: Operated) -> None:
    alice = operated.client("alice")
    operated(ap.ChannelAdd("Quiz", "quiz night", 1))
    listed = alice.recv_type(ChannelList)
    assert isinstance(listed, ChannelList)
    assert listed.channels[-1] == ChannelInfo("Quiz", "quiz night", 1)
    operated(ap.Move("alice", "Quiz"))
    moved = alice.recv(lambda m: isinstance(m, UserJoined) and m.channel == "Quiz")
    assert isinstance(moved, UserJoined) and moved.user_id == alice.user_id
    operated(ap.Say("restart at midnight"))
    chat = alice.recv_type(Chat)
    assert isinstance(chat, Chat) and chat.user_id == 0 and chat.text == "restart at midnight"
    operated(ap.ChannelRename("Quiz", "Trivia"))
    renamed = alice.recv(lambda m: isinstance(m, UserJoined) and m.channel == "Trivia")
    assert isinstance(renamed, UserJoined)
    operated(ap.ChannelRemove("Trivia"))
    home = alice.recv(lambda m: isinstance(m, UserJoined) and m.channel == "Lobby")
    assert isinstance(home, UserJoined)
    with pytest.raises(ap.AdminError, match="declared in the configuration"):
        operated(ap.ChannelRemove("Lobby"))
    with pytest.raises(ap.AdminError, match="no user"):
        operated(ap.Kick("nobody"))
    alice.close()


def test_status_counts_sessions_and_the_forwarding_rate(operated: Operated) -> None:
    alice, bob = operated.client("alice"), operated.client("bob")
    talker = Talker(alice)
    try:
        assert hears(bob, 2.0)
        status = operated(ap.Status(window=1.0))
    finally:
        talker.stop()
    assert status["up"] and status["sessions"] == 2 and status["connections"] == 2
    assert 20 <= status["forwarded_per_s"] <= 150  # ~100/s offered; a loaded machine sends fewer
    alice.close()
    bob.close()


def test_channels_bans_and_settings_survive_a_restart(operated: Operated) -> None:
    operated(ap.ChannelAdd("Ops", "operators", 4))
    operated(ap.Ban(address="127.0.0.3", reason="abuse"))
    operated(ap.Set("welcome_text", "hello again"))
    operated.stop()
    operated.start()
    names = [c["name"] for c in operated(ap.Channels())]
    assert names[-1] == "Ops"
    (ban,) = operated(ap.Bans())
    assert ban["address"] == "127.0.0.3" and ban["expires"] is None
    assert operated(ap.Settings()) == {"welcome_text": "hello again"}
    with ProbeClient(HOST, operated.relay_port, source="127.0.0.3") as banned:
        err = banned.recv_type(Error)
        assert isinstance(err, Error) and err.code == "banned"
    c = operated.client("alice")
    chat = c.recv_type(Chat)  # the welcome text, from the setting
    assert isinstance(chat, Chat) and chat.text == "hello again" and chat.user_id == 0
    assert c.welcome is not None and c.welcome.channels[-1] == "Ops"
    c.close()


def test_set_refuses_what_needs_a_restart_and_unset_restores(operated: Operated) -> None:
    with pytest.raises(ap.AdminError, match="cannot be set at run time"):
        operated(ap.Set("port", "9"))
    with pytest.raises(ap.AdminError, match="positive"):
        operated(ap.Set("grace", "-1"))
    assert operated(ap.Set("max_clients", "1"))["applied"] == ["max_clients"]
    a = operated.client("a")
    with ProbeClient(HOST, operated.relay_port) as b:
        err = b.recv_type(Error)
        assert isinstance(err, Error) and err.code == "server_full"
    operated(ap.Unset("max_clients"))
    operated.client("b").close()
    a.close()
