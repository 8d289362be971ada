"""relay/control_accept.py: a real TLS relay's control port, met by old and new clients.

Through a real relay process and loopback sockets: a protocol-1 client (the plain-TCP
probe client, as a relay started with --insecure speaks to) is told in its own framing
that the relay needs protocol 2 and TLS, then closed; TLS clients go on as before, even
when their ClientHello arrives a byte at a time; a silent connection is closed after
the handshake timeout; each refusal is counted.
"""

from __future__ import annotations

import io
import os
import re
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.launch import start_relay, stop_relay
from relay.probe import ProbeClient
from relay.protocol.messages import LENGTH, Auth, Error, MessageDecoder, Welcome, encode_message
from relay.tls import client_context

HOST = "127.0.0.1"
AUTH_TIMEOUT = 1.0


class Relay:
    def __init__(self) -> None:
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in stop)
        self.dir = tempfile.TemporaryDirectory()
        self.proc, self.port = start_relay(
            "--data-dir", self.dir.name, "--auth-timeout", str(AUTH_TIMEOUT), log=self.log
        )

    def stop(self) -> str:
        stop_relay(self.proc)
        self.log.seek(0)
        text = self.log.read()
        self.log.close()
        self.dir.cleanup()
        return text


@pytest.fixture
def relay() -> Iterator[Relay]:
    r = Relay()
    try:
        yield r
    finally:
        if not r.log.closed:
            r.stop()


def counters(log: str) -> dict[str, int]:
    line = [ln for ln in log.splitlines() if "counters at exit" in ln][-1]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, float]:
    """Everything the relay sends until it closes, and how long that took."""
    sock.settimeout(timeout)
    start = time.monotonic()
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - start


def tls_handshake_a_byte_at_a_time(port: int) -> ssl.SSLObject:
    """A TLS client whose every write goes out one byte per segment (TCP_NODELAY)."""
    raw = socket.create_connection((HOST, port), timeout=5)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context().wrap_bio(incoming, outgoing)
    try:
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                for b in outgoing.read():
                    raw.sendall(bytes([b]))
                    time.sleep(0.0005)
                incoming.write(raw.recv(65536))
        raw.sendall(outgoing.read())
        obj.write(encode_message(Auth(name="slow", version=2)))
        raw.sendall(outgoing.read())
        decoder = MessageDecoder()
        while True:
            incoming.write(raw.recv(65536))
            try:
                plain = obj.read(65536)
            except ssl.SSLWantReadError:
                continue
            if any(isinstance(m, Welcome) for m in decoder.feed(plain)):
                return obj
    finally:
        raw.close()


def test_an_old_plaintext_client_is_told_to_upgrade_and_new_ones_still_connect(
    relay: Relay,
) -> None:
    with ProbeClient(HOST, relay.port) as old:  # protocol 1: plain TCP, auth without version
        old.send(Auth(name="old"))
        err = old.recv_type(Error)
        assert isinstance(err, Error) and err.code == "bad_version"
        assert "protocol 2" in err.message and "TLS" in err.message
        assert "protocol 1" in err.message and "upgrade" in err.message
        assert old.closed_by_relay(3.0)
    with socket.create_connection((HOST, relay.port), timeout=5) as raw:  # in pieces
        frame = encode_message(Auth(name="old2"))
        raw.sendall(frame[:1])
        time.sleep(0.05)
        raw.sendall(frame[1:6])
        time.sleep(0.05)
        raw.sendall(frame[6:])
        reply, _ = read_until_closed(raw)
        (answer,) = MessageDecoder().feed(reply)
        assert isinstance(answer, Error) and answer.code == "bad_version"
    with ProbeClient(HOST, relay.port, sealed=True) as new:
        assert new.auth("new").user_id > 0
    assert tls_handshake_a_byte_at_a_time(relay.port).version() in ("TLSv1.3", "TLSv1.2")
    with socket.create_connection((HOST, relay.port), timeout=5) as raw:  # 0x00, not a frame
        raw.sendall(LENGTH.pack(3) + b"abc")
        reply, _ = read_until_closed(raw)
        assert reply == b""
    with socket.create_connection((HOST, relay.port), timeout=5) as raw:  # silent
        reply, took = read_until_closed(raw)
        assert reply == b"" and AUTH_TIMEOUT * 0.9 <= took < AUTH_TIMEOUT + 2.0
    with socket.create_connection((HOST, relay.port), timeout=5) as raw:  # garbage: TLS says no
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reply, _ = read_until_closed(raw)
        assert reply == b"" or reply[0] == 0x15  # at most a TLS alert, as before
    c = counters(relay.stop())
    assert c["refused_old_protocol"] == 2
    assert c["refused_not_tls"] == 1
    assert c["refused_hello_timeout"] == 1


OLD_RELEASE = "43dec21"  # the last commit before protocol 2 (4dae16b): a protocol-1 client
ROOT = Path(__file__).resolve().parent.parent


def old_client(into: Path) -> Path:
    """The headless client of OLD_RELEASE, unpacked from this repository's history."""
    if shutil.which("git") is None:
        pytest.skip("no git to take the old client from")
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", OLD_RELEASE, "pipeline", "relay"],
        capture_output=True,
        check=False,
    )
    if tar.returncode != 0:
        pytest.skip(f"{OLD_RELEASE} is not in this checkout's history")
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as t:
        t.extractall(into, filter="data")
    return into


def test_a_released_protocol_1_client_prints_why_the_relay_refused_it(
    relay: Relay, tmp_path: Path
) -> None:
    """The real old client, as its users have it, against a TLS relay: it prints the
    relay's bad_version message (protocol 2, TLS, upgrade) instead of failing silently."""
    tree = old_client(tmp_path / "old")
    env = {**os.environ, "PYTHONPATH": str(tree), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "--server", f"{HOST}:{relay.port}", "--name", "old",
         "--input", "silence", "--output", "null", "--duration", "60"],
        cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out = b""
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + 60  # its stages start slowly on a busy machine
            while b"bad_version" not in out and time.monotonic() < deadline:
                if sel.select(deadline - time.monotonic()):
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break  # it ended
                    out += chunk
    finally:
        proc.send_signal(signal.SIGINT)  # as a user's Ctrl-C: it stops its stages
        try:
            out += proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    text = out.decode(errors="replace").replace("\r", "\n")
    told = [ln for ln in text.splitlines() if "bad_version" in ln]
    assert told, text[-3000:]
    assert "this relay speaks protocol 2" in told[0] and "TLS" in told[0]
    assert "your client speaks protocol 1" in told[0] and "upgrade it" in told[0]
    assert counters(relay.stop())["refused_old_protocol"] >= 1


def test_random_first_bytes_never_stop_the_port(relay: Relay) -> None:
    import random

    rng = random.Random(12)
    for i in range(40):
        n = rng.randrange(1, 300)
        data = bytes(rng.randrange(256) for _ in range(n))
        if i % 2:  # half of them look like the start of a protocol-1 frame
            data = b"\x00" + data[1:]
        with socket.create_connection((HOST, relay.port), timeout=5) as raw:
            raw.sendall(data)
            raw.shutdown(socket.SHUT_WR)  # and nothing more
            read_until_closed(raw)
    with ProbeClient(HOST, relay.port, sealed=True) as new:
        assert new.auth("after").user_id > 0
    with ProbeClient(HOST, relay.port) as old:
        old.send(Auth(name="old"))
        err = old.recv_type(Error)
        assert isinstance(err, Error) and err.code == "bad_version"
    c = counters(relay.stop())
    assert c["refused_not_tls"] == 20 and c["refused_old_protocol"] == 1
