"""relay/admin_cli.py: voicechat-admin's command lines, output and exit codes, on a stub socket."""

from __future__ import annotations

import argparse
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import admin_cli
from relay import admin_protocol as ap


@pytest.mark.parametrize(
    ("argv", "req"),
    [
        (["status"], ap.Status()),
        (["status", "--window", "3"], ap.Status(3.0)),
        (["users"], ap.Users()),
        (["kick", "alice", "be nice"], ap.Kick("alice", "be nice")),
        (["mute", "bob"], ap.Mute("bob")),
        (["unmute", "7"], ap.Unmute("7")),
        (
            ["ban", "3", "--for", "2h", "--reason", "spam"],
            ap.Ban("3", duration=7200.0, reason="spam"),
        ),
        (["ban", "--address", "10.0.0.0/8", "--name", "x"], ap.Ban(address="10.0.0.0/8", name="x")),
        (["unban", "4"], ap.Unban(4)),
        (["channel-add", "Quiz", "--max-users", "5"], ap.ChannelAdd("Quiz", "", 5)),
        (["channel-edit", "Quiz", "--description", "hi"], ap.ChannelEdit("Quiz", "hi", None)),
        (["channel-rename", "Quiz", "Trivia"], ap.ChannelRename("Quiz", "Trivia")),
        (["channel-remove", "Quiz"], ap.ChannelRemove("Quiz")),
        (["move", "alice", "AFK"], ap.Move("alice", "AFK")),
        (["say", "hello", "--channel", "AFK"], ap.Say("hello", "AFK")),
        (["set", "max_clients", "50"], ap.Set("max_clients", "50")),
        (["unset", "max_clients"], ap.Unset("max_clients")),
        (["settings"], ap.Settings()),
        (["reload"], ap.Reload()),
        (["bans"], ap.Bans()),
        (["channels"], ap.Channels()),
    ],
)
def test_each_command_line_is_its_request(argv: list[str], req: ap.Request) -> None:
    assert admin_cli.request_of(admin_cli.build_parser().parse_args(argv)) == req


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), ("1d", 86400.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert admin_cli._duration(text) == seconds


@given(st.text(max_size=12))
def test_fuzz_a_duration_is_seconds_or_a_usage_error(text: str) -> None:
    try:
        value = admin_cli._duration(text)
    except argparse.ArgumentTypeError:
        return
    assert value >= 0


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[tuple[str, list[bytes]]]:
    """A socket that answers each request line with the next canned reply; records requests."""
    path = str(tmp_path / "admin.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    seen: list[bytes] = []
    replies: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                line = conn.makefile("rb").readline()
                seen.append(line)
                conn.sendall(replies.pop(0) if replies else ap.ok())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield path, replies
    finally:
        server.close()
        thread.join(2)


def test_status_prints_one_line(
    stub: tuple[str, list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, replies = stub
    replies.append(
        ap.ok(
            {
                "up": True,
                "sessions": 3,
                "connections": 3,
                "channels": 5,
                "forwarded_per_s": 140.0,
                "forwarded_total": 9,
                "port": 8080,
                "uptime_s": 12.0,
            }
        )
    )
    assert admin_cli.main(["--socket", path, "status"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("up: 3 session(s)") and "140 datagrams/s" in out


def test_tables_and_json(stub: tuple[str, list[bytes]], capsys: pytest.CaptureFixture[str]) -> None:
    path, replies = stub
    users = [
        {
            "user_id": 1,
            "name": "alice",
            "channel": "Lobby",
            "address": "10.0.0.1",
            "connected": True,
            "voice": True,
        }
    ]
    replies += [ap.ok(users), ap.ok(users)]
    assert admin_cli.main(["--socket", path, "users"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "CHANNEL", "ADDRESS", "STATE"]
    assert lines[1].split()[:4] == ["1", "alice", "Lobby", "10.0.0.1"]
    assert admin_cli.main(["--socket", path, "--json", "users"]) == 0
    assert json.loads(capsys.readouterr().out) == users


def test_mute_says_what_it_did_and_users_shows_it(
    stub: tuple[str, list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, replies = stub
    done = {"user_id": 2, "name": "bob", "server_muted": True, "changed": True}
    replies += [ap.ok(done), ap.ok({**done, "changed": False})]
    assert admin_cli.main(["--socket", path, "mute", "bob"]) == 0
    assert capsys.readouterr().out.strip() == "bob (#2) muted"
    assert admin_cli.main(["--socket", path, "mute", "bob"]) == 0
    assert capsys.readouterr().out.strip() == "bob (#2) muted already"
    user = {"user_id": 2, "name": "bob", "channel": "Lobby", "address": "10.0.0.2"}
    replies.append(ap.ok([{**user, "connected": True, "voice": True, "server_muted": True}]))
    assert admin_cli.main(["--socket", path, "users"]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith("connected, muted by the server")


def test_a_refusal_is_exit_1_with_the_reason(
    stub: tuple[str, list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, replies = stub
    replies.append(ap.failed("no user 'bob'"))
    assert admin_cli.main(["--socket", path, "kick", "bob"]) == 1
    assert "no user 'bob'" in capsys.readouterr().err


def test_no_relay_is_exit_3_and_says_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert admin_cli.main(["--socket", str(tmp_path / "none.sock"), "status"]) == admin_cli.DOWN
    assert "relay down" in capsys.readouterr().err
