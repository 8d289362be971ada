"""relay/admin_protocol.py: typed request and reply lines; any bytes: a request or AdminError."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import admin_protocol as ap

EVERY_REQUEST: list[ap.Request] = [
    ap.Status(),
    ap.Status(window=2.5),
    ap.Users(),
    ap.Channels(),
    ap.Kick("alice", "be nice"),
    ap.Mute("bob"),
    ap.Unmute("7"),
    ap.Ban(user="3", duration=3600.0, reason="spam"),
    ap.Ban(address="10.0.0.0/8", name="troll"),
    ap.Unban(7),
    ap.Bans(),
    ap.ChannelAdd("Quiz", "quiz night", 8),
    ap.ChannelEdit("Quiz", max_users=4),
    ap.ChannelEdit("Quiz", description=""),
    ap.ChannelRename("Quiz", "Trivia"),
    ap.ChannelRemove("Trivia"),
    ap.Move("alice", "Lobby"),
    ap.Say("restart at midnight"),
    ap.Say("quiet please", channel="Music"),
    ap.Set("max_clients", "100"),
    ap.Unset("max_clients"),
    ap.Settings(),
    ap.Reload(),
]


def test_every_verb_has_a_request() -> None:
    assert {r.CMD for r in EVERY_REQUEST} == set(ap.REQUESTS)
    assert all(cls.HELP for cls in ap.REQUESTS.values())


@pytest.mark.parametrize("req", EVERY_REQUEST, ids=lambda r: r.CMD)
def test_every_request_round_trips_as_one_json_line(req: ap.Request) -> None:
    line = req.encode()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["cmd"] == req.CMD
    assert ap.parse_request(line) == req


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"kick alice", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"user": "a"}', "lacks a string 'cmd'"),
        (b'{"cmd": "explode"}', "unknown command 'explode'"),
        (b'{"cmd": "kick"}', "kick lacks the field 'user'"),
        (b'{"cmd": "mute"}', "mute lacks the field 'user'"),
        (b'{"cmd": "unmute", "user": ""}', "unmute.user"),
        (b'{"cmd": "kick", "user": 3}', "kick.user must be"),
        (b'{"cmd": "kick", "user": "a", "force": true}', "unknown field 'force'"),
        (b'{"cmd": "unban", "id": -1}', "unban.id"),
        (b'{"cmd": "unban", "id": true}', "unban.id"),
        (b'{"cmd": "say", "text": ""}', "say.text"),
        (b'{"cmd": "status", "window": NaN}', "status.window"),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100_000, "exceeds"),
    ],
)
def test_bad_requests_get_a_reason_a_person_can_act_on(line: bytes, words: str) -> None:
    with pytest.raises(ap.AdminError) as info:
        ap.parse_request(line)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_replies_carry_the_result_or_the_error() -> None:
    assert ap.parse_reply(ap.ok({"a": 1})) == {"a": 1}
    assert ap.parse_reply(ap.ok()) is None
    with pytest.raises(ap.AdminError, match="no such user"):
        ap.parse_reply(ap.failed("no such user"))
    for bad in (b"nope", b"{}", b'{"ok": 1}', b"[]"):
        with pytest.raises(ap.AdminError):
            ap.parse_reply(bad)


@given(st.binary(max_size=200))
def test_fuzz_any_bytes_give_a_request_or_admin_error(data: bytes) -> None:
    try:
        req = ap.parse_request(data)
    except ap.AdminError:
        return
    assert ap.parse_request(req.encode()) == req


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
FIELD_NAMES = sorted(
    {f for cls in ap.REQUESTS.values() for f in cls.__dataclass_fields__} | {"bogus"}  # type: ignore[attr-defined]
)


@given(
    st.sampled_from(sorted(ap.REQUESTS)),
    st.dictionaries(st.sampled_from(FIELD_NAMES), JSON, max_size=4),
)
def test_fuzz_request_shaped_objects(cmd: str, fields: dict[str, Any]) -> None:
    line = json.dumps({"cmd": cmd, **fields}).encode()
    try:
        req = ap.parse_request(line)
    except ap.AdminError:
        return
    assert cmd == req.CMD and ap.parse_request(req.encode()) == req


@given(st.binary(max_size=200))
def test_fuzz_any_reply_bytes_give_a_result_or_admin_error(data: bytes) -> None:
    with contextlib.suppress(ap.AdminError):
        ap.parse_reply(data)
