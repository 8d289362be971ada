"""The local datagram socket between the network and control processes: the TCP tunnel's
voice (SPEC.md, "TCP tunnel") and the network stage's word on which path voice takes.

Voice frames go 50 times a second per speaker, each a few hundred bytes, and must
never queue: a stage that is not there, or not reading, loses them (counted), it does
not get a backlog of old voice later. So not the bus (a broker hop and msgpack each
way, and messages held for a late subscriber) but a Unix datagram socket per process,
bound in the client's private state folder (0700) and ``connect()``-ed to its peer's,
so that it hears its peer only and the kernel's 10-datagram limit for unconnected
senders does not apply (bench/tunnel.py measures the hop against the bus).

One datagram is one message: a kind byte, then for ``VOICE`` the voice datagram's
bytes as they travel over UDP (up: sealed with its relay tag; down: as the relay
forwards it). ``PATH_TCP`` / ``PATH_UDP`` (no body) come from the network stage on
every change and once a second.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path

NETWORK = "tunnel-network.sock"
CONTROL = "tunnel-control.sock"
VOICE = 1
PATH_TCP = 2
PATH_UDP = 3
KINDS = (VOICE, PATH_TCP, PATH_UDP)
MAX_MESSAGE = 1 + 1342  # kind byte and the largest sealed datagram
SNDBUF = 64 * 1024  # what one side may have queued at the other: ~1/3 s of 3 speakers
RETRY_NS = 250_000_000  # between attempts to connect to a peer that is not there
_PEER_GONE = (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTCONN, errno.EPERM, errno.EDESTADDRREQ)


class TunnelSocket:
    """One end: bound at ``folder/own``, sending to and hearing ``folder/peer`` only.

    ``send`` never blocks: a peer that is not there or whose queue is full loses the
    message, counted in ``unsent``. Receiving yields ``(kind, body)`` pairs; anything
    else (an unknown kind, an empty datagram) is counted in ``bad`` and dropped.
    """

    def __init__(self, folder: str, own: str, peer: str) -> None:
        self.path = str(Path(folder) / own)
        self.peer = str(Path(folder) / peer)
        self.unsent = self.bad = self.sent = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # a stage that died left its socket behind
            self.sock.bind(self.path)
            self.sock.setblocking(False)
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        except BaseException:
            self.sock.close()
            raise
        self._connected = False
        self._next_try = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def _connect(self, now: int) -> bool:
        if self._connected:
            return True
        if now < self._next_try:
            return False
        try:
            self.sock.connect(self.peer)
        except OSError:
            self._next_try = now + RETRY_NS
            return False
        self._connected = True
        return True

    def tick(self, now: int) -> None:
        """Connect to the peer if it is not yet (or no more): from then on only it is heard,
        and it is not held to the kernel's limit on datagrams from strangers."""
        self._connect(now)

    def send(self, kind: int, body: bytes | memoryview, now: int) -> bool:
        """Send one message; False (counted) if the peer cannot take it now."""
        if not self._connect(now):
            self.unsent += 1
            return False
        try:
            self.sock.sendmsg((bytes((kind,)), body))
        except BlockingIOError:  # its queue is full: this one is lost, not queued
            self.unsent += 1
            return False
        except OSError as exc:
            self.unsent += 1
            if exc.errno in _PEER_GONE:  # the peer restarted: connect to its new socket
                self._connected = False
                self._next_try = now
            return False
        self.sent += 1
        return True

    def receive(self, buf: bytearray) -> list[tuple[int, bytes]]:
        """Every message queued now (``buf`` at least MAX_MESSAGE + 1 bytes)."""
        out: list[tuple[int, bytes]] = []
        view = memoryview(buf)
        while True:
            try:
                n = self.sock.recv_into(view, len(view))
            except (BlockingIOError, InterruptedError):
                return out
            except OSError as exc:
                if exc.errno in _PEER_GONE:
                    self._connected = False
                return out
            if n == 0 or n > MAX_MESSAGE or buf[0] not in KINDS:
                self.bad += 1
                continue
            out.append((buf[0], bytes(view[1:n])))

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
