"""pipeline/stages/control.py: the control stage's TLS and certificate pins, real processes."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pipeline.client.config import ClientConfig
from pipeline.client.local_client import LocalClient, connected
from pipeline.core.pins import PinFile
from pipeline.ipc import events as ev
from relay.launch import start_relay, stop_relay
from relay.tls import IDENTITY_FILE, certificate_fingerprint


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
                notices = [n.text for n in c.view.chat if isinstance(n, ev.Notice)]
                assert any("pinned the certificate" in t for t in notices)
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
