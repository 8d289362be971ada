"""A minimal blocking relay client, for integration tests, the load generator and smoke checks.

Not the desktop client's network stage: no reconnect logic, no threads. One TCP
connection with a message decoder, one UDP socket, and helpers that wait for a
reply with a timeout so a test fails instead of hanging.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from relay.protocol.datagram import HEADER_SIZE, VoiceDatagram
from relay.protocol.errors import ProtocolError
from relay.protocol.messages import Auth, Message, MessageDecoder, Welcome, encode_message

Addr = tuple[str, int]


class ProbeClient:
    """One user of a relay at ``host:port`` (TCP and UDP on the same port)."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.relay: Addr = (host, port)
        self.timeout = timeout
        self.tcp = socket.create_connection(self.relay, timeout=timeout)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, 0))
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
            self.inbox += self._decoder.feed(chunk)

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
                self.inbox += self._decoder.feed(chunk)
            except ProtocolError:
                return True
        return False

    def auth(self, name: str) -> Welcome:
        self.send(Auth(name=name))
        welcome = self.recv_type(Welcome)
        assert isinstance(welcome, Welcome)
        self.welcome = welcome
        return welcome

    @property
    def token(self) -> int:
        assert self.welcome is not None
        return self.welcome.token

    @property
    def user_id(self) -> int:
        assert self.welcome is not None
        return self.welcome.user_id

    # --- UDP ---------------------------------------------------------------------------

    def register(self, attempts: int = 20) -> None:
        """Send register pings until one comes back (the relay then binds our address)."""
        ping = bytes(VoiceDatagram(self.token, 0, time.monotonic_ns()))
        self.udp.settimeout(self.timeout / attempts)
        try:
            for _ in range(attempts):
                self.udp.sendto(ping, self.relay)
                try:
                    data, _ = self.udp.recvfrom(2048)
                except TimeoutError:
                    continue
                if data == ping:
                    return
            raise TimeoutError("no answer to the register ping")
        finally:
            self.udp.settimeout(self.timeout)

    def send_voice(self, seq: int, payload: bytes, target: int = 0) -> bytes:
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
            if len(data) > HEADER_SIZE:
                return VoiceDatagram.parse(data)
        return None
