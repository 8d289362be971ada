"""relay/store.py: the SQLite file, on a temporary directory."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from relay.protocol.messages import ChannelInfo
from relay.store import Store, StoreError


def test_channels_bans_and_settings_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    with Store(path) as s:
        s.save_channels([ChannelInfo("Ops", "operators", 4), ChannelInfo("Quiz")])
        ban = s.add_ban("10.0.0.0/8", "", "spam", 100.0, 200.0)
        forever = s.add_ban("", "troll", "", 100.0, None)
        s.set_setting("max_clients", 50)
        s.set_setting("welcome_text", "hi")
    with Store(path) as s:
        assert s.channels() == [ChannelInfo("Ops", "operators", 4), ChannelInfo("Quiz")]
        assert s.bans() == [ban, forever] and ban.id != forever.id
        assert s.settings() == {"max_clients": 50, "welcome_text": "hi"}
        assert s.remove_ban(ban.id) and not s.remove_ban(ban.id)
        assert s.clear_setting("max_clients") and not s.clear_setting("max_clients")
        s.save_channels([ChannelInfo("Quiz")])
    with Store(path) as s:
        assert s.bans() == [forever] and s.settings() == {"welcome_text": "hi"}
        assert s.channels() == [ChannelInfo("Quiz")]


def test_the_database_is_in_write_ahead_logging_mode(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    Store(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


@pytest.mark.parametrize(
    "content",
    [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["garbage", "torn-header"],
)
def test_a_corrupt_file_is_refused_with_one_clear_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "relay.db"
    path.write_bytes(content)
    with pytest.raises(StoreError) as info:
        Store(path)
    text = str(info.value)
    assert str(path) in text and "corrupt" in text and "\n" not in text
    assert path.read_bytes() == content  # nothing was overwritten


def test_a_database_from_a_newer_relay_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_database_is_refused_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    Store(path).close()
    for p in tmp_path.iterdir():
        p.chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(StoreError, match=r"relay\.db"):
            Store(path)
    finally:
        tmp_path.chmod(0o755)


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot"):
        Store(tmp_path / "no" / "such" / "relay.db")


def test_a_directory_in_place_of_the_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot"):
        Store(tmp_path)


def test_the_relay_refuses_a_corrupt_database_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    path.write_bytes(b"not sqlite" * 500)
    done = subprocess.run(
        [sys.executable, "-m", "relay", "--port", "0", "--database", str(path)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert str(path) in line and "corrupt" in line
    assert path.read_bytes() == b"not sqlite" * 500
