"""Minimal relay clients, for integration tests, the load generators and smoke checks.

Not the desktop client's network stage: no reconnect logic, no threads.

* :class:`ProbeClient`: one TCP connection with a message decoder, one UDP
  socket, and helpers that wait for a reply with a timeout so a test fails
  instead of hanging;
* :class:`Crowd`: many sessions read by one selector, speaking the wire format
  by hand (SPEC.md: a u32 length and a msgpack map), as an outsider would.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import struct
import time
from collections.abc import Callable
from typing import Any

import msgpack

from relay.protocol.datagram import HEADER_SIZE, VoiceDatagram
from relay.protocol.errors import ProtocolError
from relay.protocol.messages import (
    PROTOCOL,
    Auth,
    MediaKey,
    Message,
    MessageDecoder,
    Welcome,
    encode_message,
)
from relay.protocol.sealed_datagram import TAG_SIZE
from relay.protocol.voice_crypto import Opened, Opener, Sealer, counter_start
from relay.tls import client_context

Addr = tuple[str, int]


class ProbeClient:
    """One user of a relay at ``host:port`` (TCP and UDP on the same port)."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float = 10.0,
        source: str | None = None,
        sealed: bool = False,
    ) -> None:
        """``source``: the local address to connect from (e.g. 127.0.0.2 on loopback).
        ``sealed``: protocol 2 (TLS, sealed voice), as a relay without --insecure speaks;
        the relay's certificate is not checked (a probe pins nothing)."""
        self.relay: Addr = (host, port)
        self.timeout = timeout
        self.sealed = sealed
        local = None if source is None else (source, 0)
        raw = socket.create_connection(self.relay, timeout=timeout, source_address=local)
        self.tcp: socket.socket = raw
        if sealed:
            try:
                self.tcp = client_context().wrap_socket(raw)
            except BaseException:
                raw.close()
                raise
        self.sealer: Sealer | None = None
        self.opener = Opener()
        family = socket.AF_INET6 if ":" in (source or host) else socket.AF_INET
        self.udp = socket.socket(family, socket.SOCK_DGRAM)
        self.udp.bind((source or host, 0))
        self.udp.settimeout(timeout)
        self._decoder = MessageDecoder()
        self.inbox: list[Message | ProtocolError] = []
        self.welcome: Welcome | None = None

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()

    def __enter__(self) -> ProbeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- control ----------------------------------------------------------------------

    def send(self, msg: Message) -> None:
        self.tcp.sendall(encode_message(msg))

    def send_raw(self, data: bytes) -> None:
        self.tcp.sendall(data)

    def recv(
        self, match: Callable[[Message | ProtocolError], bool] = lambda m: True
    ) -> Message | ProtocolError:
        """The first received message satisfying ``match`` (earlier ones stay in the inbox)."""
        deadline = time.monotonic() + self.timeout
        while True:
            for i, m in enumerate(self.inbox):
                if match(m):
                    return self.inbox.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching message in {self.timeout}s; inbox {self.inbox}")
            self.tcp.settimeout(left)
            chunk = self.tcp.recv(65536)
            if not chunk:
                raise ConnectionError(f"relay closed the connection; inbox {self.inbox}")
            self._take(self._decoder.feed(chunk))

    def _take(self, items: list[Message | ProtocolError]) -> None:
        for m in items:
            if isinstance(m, MediaKey) and self.sealer is not None:
                self.sealer.set_media_key(m.key_id, m.key)
                self.opener.add_media_key(m.key_id, m.key)
        self.inbox += items

    def poll_control(self) -> None:
        """Take the control messages that have arrived, without waiting (a ``media_key``
        among them is applied at once, as a client does)."""
        self.tcp.setblocking(False)
        try:
            while True:
                try:
                    chunk = self.tcp.recv(65536)
                except (BlockingIOError, ssl.SSLWantReadError):
                    return
                if not chunk:
                    return
                self._take(self._decoder.feed(chunk))
        finally:
            self.tcp.settimeout(self.timeout)

    def recv_type(self, cls: type[Message]) -> Message:
        msg = self.recv(lambda m: isinstance(m, cls))
        assert isinstance(msg, cls)
        return msg

    def closed_by_relay(self, timeout: float | None = None) -> bool:
        """Read until the relay closes the connection (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while (left := deadline - time.monotonic()) > 0:
            self.tcp.settimeout(left)
            try:
                chunk = self.tcp.recv(65536)
            except TimeoutError:
                return False
            except ConnectionError:
                return True
            if not chunk:
                return True
            try:
                self._take(self._decoder.feed(chunk))
            except ProtocolError:
                return True
        return False

    def auth(self, name: str, password: str = "") -> Welcome:
        if self.sealed:
            self.send(Auth(name=name, version=PROTOCOL, password=password))
        else:
            self.send(Auth(name=name))
        welcome = self.recv_type(Welcome)
        assert isinstance(welcome, Welcome)
        self.take_welcome(welcome)
        return welcome

    def take_welcome(self, welcome: Welcome) -> None:
        """Adopt a welcome (from auth or a reconnect): with protocol 2, its keys."""
        self.welcome = welcome
        if self.sealed:
            assert welcome.udp_key is not None and welcome.media_key is not None
            self.sealer = Sealer(
                welcome.user_id, welcome.udp_key, counter_start(0, time.monotonic_ns())
            )
            self.sealer.set_media_key(welcome.media_key_id, welcome.media_key)
            self.opener.add_media_key(welcome.media_key_id, welcome.media_key)

    @property
    def token(self) -> int:
        assert self.welcome is not None
        return self.welcome.token

    @property
    def user_id(self) -> int:
        assert self.welcome is not None
        return self.welcome.user_id

    # --- UDP ---------------------------------------------------------------------------

    def ping_datagram(self) -> bytes:
        """One register ping, as this client's protocol has it."""
        if self.sealer is not None:
            return self.sealer.ping(time.monotonic_ns())
        return bytes(VoiceDatagram(self.token, 0, time.monotonic_ns()))

    def _answers(self, pings: list[bytes], data: bytes) -> bool:
        """Whether ``data`` answers one of ``pings`` (a slow relay's answer to an earlier
        attempt counts: each attempt is a new ping with its own counter)."""
        if self.sealer is None:
            return data in pings
        return any(data[:-TAG_SIZE] == p[:-TAG_SIZE] for p in pings) and not isinstance(
            self.sealer.ping_answer(data), str
        )

    def register(self, attempts: int = 20) -> None:
        """Send register pings until one comes back (the relay then binds our address)."""
        self.udp.settimeout(self.timeout / attempts)
        pings: list[bytes] = []
        try:
            for _ in range(attempts):
                pings.append(self.ping_datagram())
                self.udp.sendto(pings[-1], self.relay)
                try:
                    data, _ = self.udp.recvfrom(2048)
                except TimeoutError:
                    continue
                if self._answers(pings, data):
                    return
            raise TimeoutError("no answer to the register ping")
        finally:
            self.udp.settimeout(self.timeout)

    def send_voice(self, seq: int, payload: bytes, target: int = 0) -> bytes:
        if self.sealer is not None:
            data = self.sealer.voice(seq, time.monotonic_ns(), payload, target)
        else:
            data = bytes(VoiceDatagram(self.token, seq, time.monotonic_ns(), target, payload))
        self.udp.sendto(data, self.relay)
        return data

    def recv_datagram(self, timeout: float | None = None) -> bytes | None:
        """One datagram, or None after ``timeout`` (default: the client's timeout)."""
        self.udp.settimeout(self.timeout if timeout is None else timeout)
        try:
            data, _ = self.udp.recvfrom(2048)
        except TimeoutError:
            return None
        finally:
            self.udp.settimeout(self.timeout)
        return data

    def recv_voice(self, timeout: float | None = None) -> VoiceDatagram | None:
        """The next voice datagram (register echoes skipped), or None after ``timeout``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while (left := deadline - time.monotonic()) > 0:
            data = self.recv_datagram(left)
            if data is None:
                return None
            if self.sealed:
                opened = self.opener.open(data) if len(data) > 1 and data[1] == 2 else None
                if isinstance(opened, Opened):
                    return VoiceDatagram(opened.speaker, opened.seq, opened.media, 0, opened.opus)
            elif len(data) > HEADER_SIZE:
                return VoiceDatagram.parse(data)
        return None


# --- many sessions, by hand ---------------------------------------------------------------

_LEN = struct.Struct(">I")
READ = 256 * 1024


def frame(**fields: Any) -> bytes:
    """One control frame, built by hand: the u32 big-endian length, the msgpack map."""
    body = msgpack.packb(fields, use_bin_type=True)
    return _LEN.pack(len(body)) + body


def welcome_done(body: dict[str, Any]) -> bool:
    """Whether this frame completes a welcome: one without ``more``, or a last page."""
    kind = body.get("type")
    return (kind == "welcome" and not body.get("more")) or (
        kind == "user_list" and bool(body.get("last"))
    )


class RawFrames:
    """Splits a stream into msgpack bodies, unpacked by msgpack alone (no schema check,
    so a load generator measures the relay, not its own decoding)."""

    def __init__(self, keep: bool = True) -> None:
        self.buf = b""
        self.keep = keep
        self.bodies: list[dict[str, Any]] = []  # every body so far, if ``keep``

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self.buf += data
        out = []
        while len(self.buf) >= 4:
            (n,) = _LEN.unpack_from(self.buf)
            if len(self.buf) < 4 + n:
                break
            out.append(msgpack.unpackb(self.buf[4 : 4 + n], raw=False))
            self.buf = self.buf[4 + n :]
        if self.keep:
            self.bodies += out
        return out


class Crowd:
    """Many sessions of one relay from this process, all read by one selector.

    Until a session's welcome (and every ``user_list`` page it announces) is in,
    its frames are decoded and kept (``welcomes``); after that its bytes are only
    counted, so thousands of sessions cost little to keep read.
    """

    def __init__(self, host: str, port: int, source: str | None = None) -> None:
        self.relay: Addr = (host, port)
        self.source = source
        self.sel = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.welcomes: dict[socket.socket, list[dict[str, Any]]] = {}  # each one's welcome frames
        self.refusals: list[dict[str, Any]] = []  # error frames that came instead of a welcome
        self.received = 0
        self.closed = 0  # sessions whose connection the relay closed
        self.last_rx = time.monotonic()
        self._pending: dict[socket.socket, RawFrames] = {}

    def __enter__(self) -> Crowd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> socket.socket:
        local = None if self.source is None else (self.source, 0)
        return socket.create_connection(self.relay, timeout=10, source_address=local)

    def add(self, n: int, prefix: str, timeout: float = 120.0, batch: int = 50) -> None:
        """Open and authenticate ``n`` more sessions (named ``prefix``0...), ``batch`` at a
        time; a refusal (an ``error`` instead of the welcome) is kept in ``refusals``."""
        deadline = time.monotonic() + timeout
        first = len(self.socks)
        for start in range(first, first + n, batch):
            for i in range(start, min(first + n, start + batch)):
                s = self.connect()
                s.sendall(frame(type="auth", name=f"{prefix}{i}"))
                s.setblocking(False)
                self._pending[s] = RawFrames()
                self.sel.register(s, selectors.EVENT_READ)
                self.socks.append(s)
            while self._pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(self._pending)} sessions got no welcome")
                self.pump(0.5)

    def send_all(self, make: Callable[[int], bytes], pump_every: int = 50) -> None:
        """Send ``make(i)`` on the i-th session, reading meanwhile."""
        for i, s in enumerate(self.socks):
            s.setblocking(True)
            with contextlib.suppress(OSError):
                s.sendall(make(i))
            s.setblocking(False)
            if i % pump_every == pump_every - 1:
                self.pump(0)

    def pump(self, timeout: float) -> int:
        """Read whatever is ready (waiting up to ``timeout``); return the bytes read."""
        got = 0
        for key, _ in self.sel.select(timeout):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(READ)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:  # the relay closed it: count it, stop reading it
                self.closed += 1
                self.sel.unregister(s)
                self._pending.pop(s, None)
                continue
            got += len(data)
            frames = self._pending.get(s)
            if frames is not None:
                for body in frames.feed(data):
                    if body.get("type") == "error":
                        self.refusals.append(body)
                    if welcome_done(body) or body.get("type") == "error":
                        del self._pending[s]
                        self.welcomes[s] = frames.bodies
                        break
        if got:
            self.received += got
            self.last_rx = time.monotonic()
        return got

    def drain(self, quiet: float = 0.3, limit: float = 30.0) -> None:
        """Read until nothing came for ``quiet`` seconds (at most ``limit``)."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            self.pump(0.05)
            if time.monotonic() - self.last_rx > quiet:
                return

    def close(self) -> None:
        for s in self.socks:
            with contextlib.suppress(KeyError, ValueError):  # pump() already let it go
                self.sel.unregister(s)
            s.close()
        self.sel.close()
        self.socks.clear()
