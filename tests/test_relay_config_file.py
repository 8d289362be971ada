"""relay/config_file.py: the TOML file checked against the flags; and the real relay reading it."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import config_file
from relay.__main__ import build_parser
from relay.config_file import ConfigError, keys_of, merge, parse
from relay.probe import ProbeClient
from relay.protocol.messages import ChannelInfo, ChannelList
from tests.test_relay_server import HOST, start_relay, stop_relay

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "relay.example.toml"
PARSER = build_parser()


def test_every_flag_is_a_key_named_after_its_destination() -> None:
    keys = keys_of(PARSER)
    flags = {a.dest for a in PARSER._actions if a.option_strings} - {"help", "config"}
    assert set(keys) == flags
    assert keys["echo"].kind is bool and keys["port"].kind is int
    assert keys["grace"].kind is float and keys["log_level"].kind is str
    assert keys["channels"].is_list and keys["max_per_address"].flag == "--max-per-address"


def test_values_are_checked_as_their_flags_check_them() -> None:
    got = parse(
        {"grace": 5, "echo": True, "channels": ["A", {"name": "B", "max_users": 3}]}, PARSER, "f"
    )
    assert got == {
        "grace": 5.0,
        "echo": True,
        "channels": [ChannelInfo("A"), ChannelInfo("B", "", 3)],
    }


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"prot": 1}, "unknown key 'prot' (did you mean 'port'?)"),
        ({"port": "8080"}, "key 'port' must be an integer, not the string '8080'"),
        ({"echo": 1}, "key 'echo' must be true or false, not the number 1"),
        ({"grace": True}, "key 'grace' must be a number, not the boolean true"),
        ({"grace": -1}, "key 'grace': must be a positive number"),
        ({"log_level": "loud"}, "key 'log_level' is 'loud'; one of debug, info, warning, error"),
        ({"channels": "Lobby"}, "key 'channels' must be a non-empty list"),
        ({"channels": [{"name": "A", "topic": "x"}]}, "unknown key 'topic'"),
        ({"channels": [{"description": "x"}]}, "has no name"),
        ({"channels": ["A", "A"]}, "lists 'A' twice"),
        ({"channels": [{"name": "A", "max_users": -1}]}, "max_users must be 0"),
        ({"metrics": "nowhere"}, "is not HOST:PORT"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_file_and_key(data: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(data, PARSER, "relay.toml")
    text = str(info.value)
    assert text.startswith("relay.toml: ") and words in text and "\n" not in text


def test_flags_override_the_file_and_the_file_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('port = 9000\ngrace = 5\nchannels = ["A", "B"]\nlog_level = "debug"\n')
    ns = merge(PARSER, ["--config", str(path), "--port", "9001", "--channel", "C"], str(path))
    assert ns.port == 9001 and ns.grace == 5.0 and ns.log_level == "debug"
    assert ns.channels == ["C"]  # a flag replaces the file's list, it does not add to it
    assert ns.auth_timeout == 10.0  # untouched: the default


def test_an_unreadable_or_broken_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config_file.load(tmp_path / "none.toml", PARSER)
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config_file.load(bad, PARSER)


def test_from_text_reads_what_an_operator_types() -> None:
    assert config_file.from_text(PARSER, "max_clients", "50") == 50
    assert config_file.from_text(PARSER, "no_voice_limit", "on") is True
    assert config_file.from_text(PARSER, "welcome_text", "hi there") == "hi there"
    with pytest.raises(ConfigError, match="integer"):
        config_file.from_text(PARSER, "max_clients", "lots")
    with pytest.raises(ConfigError, match="positive"):
        config_file.from_text(PARSER, "grace", "0")


def test_the_example_file_is_valid_and_every_commented_key_too() -> None:
    text = EXAMPLE.read_text()
    parse(tomllib.loads(text), PARSER, str(EXAMPLE))
    # Every "# key = value" line, uncommented, is a valid key and value.
    for line in text.splitlines():
        body = line.removeprefix("# ")
        if line.startswith("# ") and " = " in body and body.split(" = ")[0].isidentifier():
            parse(tomllib.loads(body), PARSER, f"{EXAMPLE}: {line!r}")


SCALARS = st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
TOML_VALUES = (
    SCALARS
    | st.lists(SCALARS, max_size=4)
    | st.lists(st.dictionaries(st.sampled_from(["name", "description", "max_users", "x"]),
                               SCALARS, max_size=3), max_size=3)
)  # fmt: skip


@given(
    st.dictionaries(
        st.sampled_from([*keys_of(PARSER), "bogus", ""]) | st.text(max_size=12),
        TOML_VALUES,
        max_size=5,
    )
)
def test_fuzz_any_document_gives_values_or_config_error(data: dict[str, Any]) -> None:
    try:
        parse(data, PARSER, "f")
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("f")


@given(st.sampled_from(sorted(k for k, v in keys_of(PARSER).items() if not v.is_list)),
       st.text(max_size=30))  # fmt: skip
def test_fuzz_from_text_gives_a_value_or_config_error(key: str, text: str) -> None:
    with contextlib.suppress(ConfigError):
        config_file.from_text(PARSER, key, text)


# --- the real relay --------------------------------------------------------------------

# A value, other than the default, for each key; a key not listed here (a flag added
# later) is written with its default, so the every-key file keeps holding every key.
EVERY_KEY: dict[str, Any] = {
    "host": HOST,
    "port": 0,
    "echo": False,
    "channels": ["Hall", {"name": "Ops", "description": "operators", "max_users": 4}],
    "grace": 12.5,
    "auth_timeout": 4.0,
    "stats_interval": 30.0,
    "udp": "thread",
    "udp_workers": 1,
    "max_clients": 100,
    "max_per_address": 10,
    "max_sessions_per_address": 10,
    "connect_rate": 8.0,
    "connect_burst": 16.0,
    "address_chat_rate": 5.0,
    "address_chat_burst": 20.0,
    "address_join_rate": 3.0,
    "address_join_burst": 12.0,
    "udp_rcvbuf": 131072,
    "voice_datagrams": 70.0,
    "voice_bytes": 80000.0,
    "voice_burst": 2.0,
    "no_voice_limit": False,
    "log_level": "debug",
    "log_format": "json",
    "obfuscate_addresses": True,
    "welcome_text": "welcome to the test relay",
}


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return repr(value)


def every_key_file(tmp_path: Path) -> Path:
    values = dict(EVERY_KEY)
    values |= {
        "database": str(tmp_path / "relay.db"),
        "admin_socket": str(tmp_path / "admin.sock"),
        "metrics": f"{HOST}:0",
    }
    lines = []
    for dest, key in keys_of(PARSER).items():
        value = values.get(dest, key.action.default)
        if value is not None:
            lines.append(f"{dest} = {_toml(value)}")
    path = tmp_path / "relay.toml"
    path.write_text("\n".join(lines) + "\n")
    assert set(tomllib.loads(path.read_text())) >= set(keys_of(PARSER)) - {"config"} - {
        d for d, k in keys_of(PARSER).items() if k.action.default is None and d not in values
    }
    return path


def test_the_relay_starts_from_a_file_with_every_key(tmp_path: Path) -> None:
    path = every_key_file(tmp_path)
    relay = start_relay("--config", str(path))
    try:
        with ProbeClient(HOST, relay.port) as c:
            w = c.auth("alice")
            assert w.channels == ["Hall", "Ops"]
            listed = c.recv_type(ChannelList)
            assert isinstance(listed, ChannelList)
            assert listed.channels[1] == ChannelInfo("Ops", "operators", 4)
        assert (tmp_path / "relay.db").exists() and (tmp_path / "admin.sock").exists()
    finally:
        log = stop_relay(relay)
    events = [json.loads(line) for line in log.splitlines()]  # log_format = "json"
    auth = [e for e in events if e.get("event") == "auth"]
    assert auth and auth[0]["user"] == "alice" and auth[0]["address"].startswith("h")  # hashed
    assert any(e["level"] == "debug" for e in events)  # log_level = "debug"


def run_relay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("colour = 1\n", "unknown key 'colour'"),
        ('grace = "long"\n', "key 'grace' must be a number, not the string 'long'"),
    ],
    ids=["bad-key", "bad-type"],
)
def test_a_bad_file_stops_start_up_with_one_line(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(content)
    done = run_relay("--config", str(path), "--port", "0")
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert str(path) in line and words in line
