"""relay/tls.py: the relay's identity and TLS contexts, and the handshake of a real relay."""

from __future__ import annotations

import os
import re
import socket
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.launch import start_relay, stop_relay
from relay.tls import (
    IDENTITY_FILE,
    certificate_fingerprint,
    client_context,
    create_self_signed,
    fingerprint,
    identity,
    is_modern,
)

HOST = "127.0.0.1"


def test_a_self_signed_identity_is_created_once_and_kept_private(tmp_path: Path) -> None:
    cert, key, created = identity(None, None, tmp_path)
    assert created and cert == key == str(tmp_path / IDENTITY_FILE)
    assert (os.stat(cert).st_mode & 0o777) == 0o600
    text = Path(cert).read_text()
    assert "PRIVATE KEY" in text and "BEGIN CERTIFICATE" in text
    again = identity(None, None, tmp_path)
    assert again == (cert, key, False) and Path(cert).read_text() == text
    fp = certificate_fingerprint(cert)
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fp)


def test_a_second_creation_keeps_the_first_identity(tmp_path: Path) -> None:
    path = tmp_path / IDENTITY_FILE
    create_self_signed(path)
    first = path.read_bytes()
    create_self_signed(path)  # as a second relay starting at the same moment would
    assert path.read_bytes() == first
    assert [p.name for p in tmp_path.iterdir()] == [IDENTITY_FILE]  # no temporary left


def test_the_operators_certificate_is_used_as_given(tmp_path: Path) -> None:
    create_self_signed(tmp_path / "op.pem", "relay.example")
    assert identity(str(tmp_path / "op.pem"), None, tmp_path) == (
        str(tmp_path / "op.pem"),
        str(tmp_path / "op.pem"),
        False,
    )


@pytest.fixture
def tls_relay() -> Iterator[tuple[int, str, Path]]:
    """A real relay with its own data folder: (port, its log, the folder)."""
    with tempfile.TemporaryDirectory() as d, tempfile.TemporaryFile("w+") as log:
        proc, port = start_relay("--data-dir", d, log=log)
        try:
            yield port, d, Path(d)
        finally:
            stop_relay(proc)


def handshake(port: int, ctx: ssl.SSLContext) -> tuple[str | None, str, str]:
    """(TLS version, cipher, certificate fingerprint) of a handshake with the relay."""
    with (
        socket.create_connection((HOST, port), timeout=5) as raw,
        ctx.wrap_socket(raw) as s,
    ):
        cipher = s.cipher()
        der = s.getpeercert(binary_form=True)
        assert der is not None and cipher is not None and is_modern(s)
        return s.version(), cipher[0], fingerprint(der)


def test_the_control_port_speaks_tls_1_3_or_1_2_with_aead_only(
    tls_relay: tuple[int, str, Path],
) -> None:
    port, _d, folder = tls_relay
    version, _cipher, fp = handshake(port, client_context())
    assert version == "TLSv1.3"
    assert fp == certificate_fingerprint(str(folder / IDENTITY_FILE))
    tls12 = client_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    version, cipher, _fp = handshake(port, tls12)
    assert version == "TLSv1.2" and ("GCM" in cipher or "CHACHA20" in cipher)
    assert cipher.startswith("ECDHE")
    weak = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    weak.check_hostname, weak.verify_mode = False, ssl.CERT_NONE
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    weak.set_ciphers("AES128-SHA:AES256-SHA")  # CBC, no forward secrecy: refused
    with pytest.raises(ssl.SSLError), socket.create_connection((HOST, port), timeout=5) as raw:
        weak.wrap_socket(raw)


def test_a_restarted_relay_shows_the_same_certificate(tmp_path: Path) -> None:
    fps = []
    for _ in range(2):
        with tempfile.TemporaryFile("w+") as log:
            proc, port = start_relay("--data-dir", str(tmp_path), log=log)
            try:
                fps.append(handshake(port, client_context())[2])
            finally:
                stop_relay(proc)
            log.seek(0)
            assert f"SHA-256 fingerprint {fps[-1]}" in log.read()
    assert fps[0] == fps[1]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # TLSVersion.TLSv1/TLSv1_1
def test_tls_1_0_and_1_1_are_refused_whatever_the_suites(
    tls_relay: tuple[int, str, Path],
) -> None:
    port, _d, _folder = tls_relay
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        try:
            ctx.set_ciphers("ALL:@SECLEVEL=0")  # every suite this OpenSSL has, CBC included
            ctx.minimum_version = ctx.maximum_version = old
        except (ssl.SSLError, ValueError):
            pytest.skip(f"this OpenSSL cannot speak {old.name}")
        with (
            pytest.raises(ssl.SSLError),
            socket.create_connection((HOST, port), timeout=5) as raw,
        ):
            ctx.wrap_socket(raw)
