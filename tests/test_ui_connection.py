"""ui/connection.py: the connection phases and their words, without a window."""

from __future__ import annotations

from pipeline.ipc import events as ev
from ui import connection as cn
from ui.connection import ConnectionModel, plain_media_error, plain_reason

REFUSED = "cannot reach h:9: Connection refused"


def retrying(attempt: int, reason: str = REFUSED) -> ev.ConnectionState:
    return ev.ConnectionState(ev.RECONNECTING, "h:9", attempt=attempt, reason=reason)


def test_a_client_that_never_connects_gives_up_after_a_few_attempts() -> None:
    m = ConnectionModel(max_first_attempts=3)
    assert m.phase == cn.NOT_CONNECTED and not m.can_retry
    m.start("h:9")
    assert m.headline() == "Connecting to h:9…"
    assert m.apply(retrying(1)) is False
    assert m.phase == cn.CONNECTING  # never connected: not "reconnecting"
    assert m.headline().startswith("Connecting to h:9… (attempt 2): nothing answers there")
    assert m.apply(retrying(2)) is False
    assert m.apply(retrying(3)) is True  # stop the client now
    assert m.phase == cn.UNREACHABLE and m.can_retry
    assert m.headline() == (
        "Could not connect to h:9: nothing answers there: is the server running, "
        "and is the port right?"
    )
    assert m.title() == "Could not connect to h:9"
    assert m.apply(retrying(4)) is False and m.phase == cn.UNREACHABLE  # late events ignored
    m.start("h:9")  # Retry
    assert m.phase == cn.CONNECTING and m.attempt == 0


def test_a_client_that_was_connected_reconnects_for_ever() -> None:
    m = ConnectionModel(max_first_attempts=3)
    m.start("h:9")
    m.apply(ev.ConnectionState(ev.CONNECTED, "h:9", name="ann", channel="Lobby"))
    assert m.online and m.headline() == "Connected to h:9 as ann in Lobby"
    for attempt in range(1, 10):
        assert m.apply(retrying(attempt, "the relay closed the connection")) is False
    assert m.phase == cn.RECONNECTING and not m.online
    assert m.headline() == (
        "Connection lost; reconnecting to h:9 (attempt 9): the server closed the connection"
    )


def test_failures_and_disconnect() -> None:
    m = ConnectionModel()
    m.start("h:9")
    m.apply(ev.ConnectionState(ev.FAILED, "h:9", reason="relay: wrong password (bad_password)"))
    assert m.phase == cn.FAILED and m.can_retry
    assert "password is wrong" in m.headline()
    m.start("h:9")
    m.client_failed("the decode stage died 4 times")
    assert m.headline() == "Stopped: the decode stage died 4 times"
    m.disconnected()
    assert m.headline() == "Disconnected from h:9" and m.can_retry


def test_reasons_in_a_desktop_users_words() -> None:
    assert plain_reason("cannot reach nowhere.example:80: Name or service not known") == (
        "there is no server named nowhere.example: check the spelling"
    )
    assert "no answer" in plain_reason("cannot reach 10.1.1.1:80: timed out")
    assert "not a voice chat server" in plain_reason(
        "TLS handshake with h:1 failed (EOF); a relay started with --insecure speaks protocol 1"
    )
    assert plain_reason("no answer from the relay for 6 s") == "no answer from the server for 6 s"
    assert plain_media_error(
        "no input sound device; use --input with one of: device[:NAME], FILE.wav"
    ) == ("no input sound device; pick another one in the Audio settings")


def test_with_several_relays_each_gets_its_first_attempts_before_giving_up() -> None:
    m = ConnectionModel(max_first_attempts=3)
    m.start("a:1,b:2")
    for attempt in range(1, 6):  # a, b, a, b, a: 5 of the 6 first attempts
        server = "b:2" if attempt % 2 else "a:1"
        state = ev.ConnectionState(ev.RECONNECTING, server, attempt, REFUSED, relays=2)
        assert m.apply(state) is False and m.phase == cn.CONNECTING
        assert m.headline().startswith(f"Connecting to {server}… (attempt {attempt + 1})")
    last = ev.ConnectionState(ev.RECONNECTING, "a:1", 6, REFUSED, relays=2)
    assert m.apply(last) is True and m.phase == cn.UNREACHABLE
    assert m.title() == "Could not connect to a:1,b:2"


def test_the_relay_in_use_is_shown_after_a_failover() -> None:
    m = ConnectionModel()
    m.start("a:1,b:2")
    m.apply(ev.ConnectionState(ev.CONNECTED, "a:1", name="ann", channel="Lobby", relays=2))
    assert m.headline() == "Connected to a:1 as ann in Lobby"
    m.apply(ev.ConnectionState(ev.RECONNECTING, "b:2", 2, REFUSED, relays=2))
    assert m.phase == cn.RECONNECTING  # was connected: reconnecting, never "unreachable"
    assert m.headline().startswith("Connection lost; reconnecting to b:2 (attempt 2)")
    m.apply(ev.ConnectionState(ev.CONNECTED, "b:2", name="ann", channel="Lobby", relays=2))
    assert m.headline() == "Connected to b:2 as ann in Lobby"
