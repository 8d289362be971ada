"""pipeline/stages/control.py: the control stage's TLS and certificate pins, real processes."""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.client.config import ClientConfig
from pipeline.client.local_client import LocalClient, connected
from pipeline.core.control_session import ControlSession
from pipeline.core.pins import PinFile
from pipeline.ipc import events as ev
from pipeline.media.sources import MediaSpec
from pipeline.stages.control import _connect, _Tls, _vouch
from relay.launch import start_relay, stop_relay
from relay.protocol.messages import PROTOCOL, Auth, MessageDecoder, Welcome, encode_message
from relay.tls import IDENTITY_FILE, certificate_fingerprint

SEALED: dict[str, Any] = {
    "version": PROTOCOL,
    "udp_key": b"k" * 32,
    "media_key_id": 1,
    "media_key": b"m" * 16,
}


def _notices(view: Any) -> list[str]:
    return [n.text for n in view.chat if isinstance(n, ev.Notice)]


def test_a_relay_whose_certificate_changed_is_refused_with_both_fingerprints(
    tmp_path: Path,
) -> None:
    pins = tmp_path / "pins.json"
    first, second = tmp_path / "first", tmp_path / "second"
    with tempfile.TemporaryFile("w+") as log:
        proc, port = start_relay("--data-dir", str(first), log=log)
        cfg = ClientConfig("127.0.0.1", port, "pinned", pins_file=str(pins))
        try:
            with LocalClient(cfg) as c:
                c.until(connected, 20, "connected on first use")
                # The notice is its own bus event: it may come just after the state.
                c.until(lambda v: any("pinned the certificate" in t for t in _notices(v)), 5,
                        "the pin told")  # fmt: skip
        finally:
            stop_relay(proc)
        old = certificate_fingerprint(str(first / IDENTITY_FILE))
        assert PinFile(pins).load() == {f"127.0.0.1:{port}": old}
        # Someone else answers on the same address now, with another certificate.
        proc, _ = start_relay("--port", str(port), "--data-dir", str(second), log=log)
        try:
            new = certificate_fingerprint(str(second / IDENTITY_FILE))
            with LocalClient(cfg) as c:
                c.until(lambda v: v.state.state == ev.FAILED, 20, "the changed certificate refused")
                reason = c.view.state.reason
                assert old in reason and new in reason and "changed" in reason
                c.pump(2.5)  # past the reconnect delay: it does not try again
                assert c.view.state.state == ev.FAILED
            assert PinFile(pins).load() == {f"127.0.0.1:{port}": old}
            accept = ClientConfig(
                "127.0.0.1", port, "pinned", pins_file=str(pins), accept_new_certificate=True
            )
            with LocalClient(accept) as c:
                c.until(connected, 20, "connected once the user accepted the new certificate")
            assert PinFile(pins).load() == {f"127.0.0.1:{port}": new}
        finally:
            stop_relay(proc)


def test_a_pins_file_that_cannot_be_read_stops_the_client_and_is_kept(tmp_path: Path) -> None:
    # Taken as no pins, a broken file would let any certificate in as new, and the
    # first pin would write over the user's others.
    pins = tmp_path / "pins.json"
    broken = b'{"127.0.0.1:1": "AA", "relay.example:8080": "BB",'  # cut short
    pins.write_bytes(broken)
    with tempfile.TemporaryFile("w+") as log:
        proc, port = start_relay("--data-dir", str(tmp_path / "relay"), log=log)
        try:
            cfg = ClientConfig("127.0.0.1", port, "p", pins_file=str(pins))
            with LocalClient(cfg) as c:
                c.until(lambda v: v.state.state == ev.FAILED, 20, "refused: no pin can be checked")
                assert str(pins) in c.view.state.reason and "fix or remove" in c.view.state.reason
        finally:
            stop_relay(proc)
    assert pins.read_bytes() == broken


def test_a_wrong_password_stops_the_client_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("sesame\n")
    with tempfile.TemporaryFile("w+") as log:
        proc, port = start_relay("--password-file", str(tmp_path / "pw"), log=log)
        try:
            wrong = ClientConfig("127.0.0.1", port, "w", password="open")
            with LocalClient(wrong) as c:
                c.until(lambda v: v.state.state == ev.FAILED, 20, "refused")
                assert "bad_password" in c.view.state.reason
            # By name: voice goes to the address the connection reached, not to the name
            # (whose first address may be of a family the relay does not bind).
            right = ClientConfig("localhost", port, "r", password="sesame")
            with LocalClient(right) as c:
                c.until(connected, 20, "connected with the password")
                c.until(lambda v: v.endpoint is not None, 20, "the voice endpoint")
                assert c.view.endpoint is not None and c.view.endpoint.host == "127.0.0.1"
        finally:
            stop_relay(proc)


def test_a_client_cannot_talk_to_an_insecure_relay_and_says_why() -> None:
    with tempfile.TemporaryFile("w+") as log:
        proc, port = start_relay("--insecure", log=log)
        try:
            with LocalClient(ClientConfig("127.0.0.1", port, "x")) as c:
                c.until(lambda v: "TLS handshake" in v.state.reason, 20, "the reason")
                assert "--insecure" in c.view.state.reason
        finally:
            stop_relay(proc)


# --- several relays (SPEC.md, "Several relays") ------------------------------------------


def free_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_client_given_two_relays_whose_first_is_down_connects_to_the_second(
    tmp_path: Path,
) -> None:
    down = free_port()
    with tempfile.TemporaryFile("w+") as log:
        proc, port = start_relay(log=log)
        try:
            cfg = ClientConfig(
                "127.0.0.1",
                down,
                "two",
                pins_file=str(tmp_path / "pins.json"),
                fallbacks=(("127.0.0.1", port),),
            )
            started = time.monotonic()
            with LocalClient(cfg) as c:
                c.until(connected, 60, "connected to the second relay")
                took = time.monotonic() - started
                assert c.view.state.server == f"127.0.0.1:{port}" and c.view.state.relays == 2
                assert c.view.endpoint is not None and c.view.endpoint.udp_port == port
            print(f"connected through the second relay {took:.2f} s after the start")
        finally:
            stop_relay(proc)


def test_a_client_whose_relay_is_killed_moves_to_the_next_and_is_heard_again(
    tmp_path: Path,
) -> None:
    """Two standalone relays: B knows nothing of A's session, so the client's reconnect is
    refused there (unknown_token) and it authenticates afresh; its voice reaches B's
    listener within 5 s of A's death."""
    with tempfile.TemporaryFile("w+") as log_a, tempfile.TemporaryFile("w+") as log_b:
        proc_a, port_a = start_relay(log=log_a)
        proc_b, port_b = start_relay(log=log_b)
        pins = str(tmp_path / "pins.json")
        try:
            listener_cfg = ClientConfig("127.0.0.1", port_b, "rx", pins_file=pins)
            talker_cfg = ClientConfig(
                "127.0.0.1",
                port_a,
                "tx",
                source=MediaSpec("tone"),
                pins_file=pins,
                fallbacks=(("127.0.0.1", port_b),),
            )
            with LocalClient(listener_cfg) as rx, LocalClient(talker_cfg) as tx:
                rx.until(connected, 60, "the listener on B")
                tx.until(connected, 60, "the talker on A")
                assert tx.view.state.server == f"127.0.0.1:{port_a}"
                old = tx.view.endpoint
                assert old is not None
                proc_a.kill()  # SIGKILL: no bye, no clean close
                proc_a.wait(10)
                killed = time.monotonic()
                end = killed + 15
                while time.monotonic() < end:
                    tx.pump(0.05)
                    rx.pump(0.05)
                    me = tx.view.endpoint
                    if me is not None and me.user_id != old.user_id and me.user_id in rx.view.heard:
                        break
                else:
                    raise AssertionError(f"not heard on B; talker: {tx.view.status_line()}")
                resumed = time.monotonic() - killed
                assert tx.view.state.server == f"127.0.0.1:{port_b}"
                assert tx.view.endpoint is not None and tx.view.endpoint.udp_port == port_b
                print(f"heard on relay B {resumed:.2f} s after relay A was killed")
                assert resumed < 5.0
        finally:
            stop_relay(proc_a)
            stop_relay(proc_b)
        log_b.seek(0)
        text = log_b.read()
        # B was asked to resume A's session first, refused it, then took a fresh auth.
        assert "event=auth_refused" in text and "code=unknown_token" in text


def test_a_learnt_relay_is_reached_with_the_fingerprint_vouched_for(tmp_path: Path) -> None:
    """A hand-written welcome from relay A (down now) names relay B with B's real
    fingerprint: the failover reaches B over TLS with that pin, as if B had been seen."""
    data = tmp_path / "b"
    down = free_port()
    with tempfile.TemporaryFile("w+") as log:
        proc, port = start_relay("--data-dir", str(data), log=log)
        try:
            real = certificate_fingerprint(str(data / IDENTITY_FILE))
            pins = tmp_path / "pins.json"
            for vouched, ok in ((real, True), (":".join(["EE"] * 32), False)):
                pins.unlink(missing_ok=True)
                tls = _Tls(str(pins))
                s = ControlSession(name="me", host="127.0.0.1", port=down)
                s.connected(0.0)
                s.take_outgoing()
                relays = [{"addr": f"127.0.0.1:{port}", "fingerprint": vouched}]
                s.received(encode_message(Welcome(77, 3, down, "Lobby", ["Lobby"], [],
                                                  relays=relays, **SEALED)), 0.0)  # fmt: skip
                s.take_events()
                _vouch(s, tls)
                assert PinFile(pins).load() == {f"127.0.0.1:{port}": vouched}
                (told,) = [e.text for e in s.take_events() if isinstance(e, ev.Notice)]
                assert f"127.0.0.1:{down} vouches for it: {vouched}" in told
                s.disconnected(1.0, "the relay closed the connection")
                assert _connect(s, s.target, 3.0, tls) is None  # A is down: B next, at once
                assert s.target.port == port and s.connect_due(time.monotonic())
                sock = _connect(s, s.target, 3.0, tls)
                notices = [e.text for e in s.take_events() if isinstance(e, ev.Notice)]
                if ok:
                    assert sock is not None
                    try:
                        assert not any("pinned the certificate" in t for t in notices)
                        sock.sendall(s.take_outgoing())  # reconnect 77: B does not know it
                        sock.settimeout(5)
                        s.received(sock.recv(65536), 3.1)
                        assert any(
                            isinstance(m, Auth) for m in MessageDecoder().feed(s.take_outgoing())
                        )
                    finally:
                        sock.close()
                else:
                    assert sock is None and s.state == ev.FAILED
                    assert real in s.reason and vouched in s.reason
        finally:
            stop_relay(proc)


def test_a_vouched_fingerprint_never_replaces_the_users_pin(tmp_path: Path) -> None:
    pins = tmp_path / "pins.json"
    PinFile(pins).pin("b.example:8080", "US")
    tls = _Tls(str(pins))
    s = ControlSession(name="me", host="a", port=1)
    s.connected(0.0)
    relays = [{"addr": "b.example:8080", "fingerprint": ":".join(["AA"] * 32)}]
    s.received(encode_message(Welcome(7, 3, 1, "Lobby", [], [], relays=relays, **SEALED)), 0.0)
    _vouch(s, tls)
    assert PinFile(pins).load() == {"b.example:8080": "US"}
    (notice,) = [e.text for e in s.take_events() if isinstance(e, ev.Notice)]
    assert "vouches for b.example:8080" in notice and "your pin is kept" in notice
