"""relay/workers.py: one SO_REUSEPORT worker process, driven through its pipe."""

from __future__ import annotations

import contextlib
import socket
import struct
import time

from relay.protocol.datagram import VoiceDatagram
from relay.router import Addr
from relay.workers import Worker


def udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.2)
    return s


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_worker_routes_its_table_reports_binds_and_counters() -> None:
    binds: list[tuple[int, Addr, bytes]] = []
    port = free_port()
    worker = Worker("127.0.0.1", port, 256 * 1024, False, lambda t, a, b: binds.append((t, a, b)))
    with udp() as a, udp() as b, udp() as stranger:
        try:
            entries = [(111, 1, "Lobby", a.getsockname()), (222, 2, "Lobby", b.getsockname())]
            worker.update({"Lobby"}, entries)
            voice = bytes(VoiceDatagram(111, 1, 2, 0, b"hi"))
            got = None
            deadline = time.monotonic() + 20  # the spawned worker needs a moment to bind
            while got is None and time.monotonic() < deadline:
                a.sendto(voice, ("127.0.0.1", port))
                with contextlib.suppress(TimeoutError):
                    got = b.recv(2048)
            assert got == struct.pack(">I", 1) + voice[4:]
            ping = bytes(VoiceDatagram(222, 0, 0))
            stranger.sendto(ping, ("127.0.0.1", port))
            deadline = time.monotonic() + 10
            while not binds and time.monotonic() < deadline:
                if worker.conn.poll(0.1):
                    worker.on_readable()
            assert binds == [(222, stranger.getsockname(), ping)]
            # The operator mutes session 111: the worker's table stops its voice too.
            worker.update({"Lobby"}, entries, {111})
            deadline = time.monotonic() + 10
            while worker.counters["drop_server_muted"] == 0 and time.monotonic() < deadline:
                a.sendto(voice, ("127.0.0.1", port))
                if worker.conn.poll(0.1):
                    worker.on_readable()
            with contextlib.suppress(TimeoutError):  # what passed before the update
                while True:
                    b.recv(2048)
            a.sendto(voice, ("127.0.0.1", port))
            with contextlib.suppress(TimeoutError):
                got = None
                got = b.recv(2048)
            assert got is None
        finally:
            worker.stop()
    assert not worker.process.is_alive()
    assert worker.counters["voice_in"] >= 1 and worker.counters["register"] == 1
    assert worker.counters["drop_server_muted"] >= 1


def test_a_dead_worker_is_reported_once() -> None:
    worker = Worker("127.0.0.1", free_port(), 256 * 1024, False, lambda t, a, b: None)
    try:
        worker.process.kill()
        worker.process.join(10)
        assert worker.conn.poll(10)
        assert worker.on_readable() is False
    finally:
        worker.conn.close()
        worker.stop()
