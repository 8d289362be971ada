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


def test_a_sealed_worker_checks_windows_forwards_sealed_and_says_when_routes_apply() -> None:
    from relay.protocol.voice_crypto import Opener, Sealer, new_media_key, new_session_key

    binds: list[tuple[int, Addr, bytes]] = []
    tunnelled: list[tuple[bytes, tuple[int, ...]]] = []
    port = free_port()
    worker = Worker(
        "127.0.0.1",
        port,
        256 * 1024,
        False,
        lambda t, a, b: binds.append((t, a, b)),
        sealed=True,
        on_tunnel=lambda d, t: tunnelled.append((d, t)),
    )
    key_a, key_b, media = new_session_key(), new_session_key(), new_media_key()
    sealer = Sealer(1, key_a, 1000)
    sealer.set_media_key(1, media)
    opener = Opener()
    opener.add_media_key(1, media)
    with udp() as a, udp() as b, udp() as replayer:
        try:
            worker.wait_ready()
            worker.set_media({1: media})
            worker.update_peers([(1, 111, key_a, 1), (2, 222, key_b, 1)], [])
            entries = [(111, 1, "Lobby", a.getsockname()), (222, 2, "Lobby", b.getsockname())]
            worker.update({"Lobby"}, entries)
            deadline = time.monotonic() + 10
            while worker.applied < worker.sent and time.monotonic() < deadline:
                if worker.conn.poll(0.1):
                    worker.on_readable()
            assert worker.applied == worker.sent == 1  # the route is in: voice may come
            voice = sealer.voice(1, 960, b"hi")
            a.sendto(voice, ("127.0.0.1", port))
            got = opener.open(b.recv(2048))
            assert not isinstance(got, str) and got.speaker == 1 and got.opus == b"hi"
            replayer.sendto(voice, ("127.0.0.1", port))  # the same counter: refused
            ping = sealer.ping(5)
            a.sendto(ping, ("127.0.0.1", port))  # answered by the relay process, not here
            replayer.sendto(ping, ("127.0.0.1", port))  # a replay from elsewhere: no bind
            with contextlib.suppress(TimeoutError):
                assert b.recv(2048) is None  # nothing more reaches b
            fresh = sealer.ping(6)
            replayer.sendto(fresh, ("127.0.0.1", port))  # fresh, from a new address: a bind
            deadline = time.monotonic() + 10
            while not binds and time.monotonic() < deadline:
                if worker.conn.poll(0.1):
                    worker.on_readable()
            assert [(t, addr) for t, addr, _ in binds] == [(111, replayer.getsockname())]
        finally:
            worker.stop()
    assert worker.counters["drop_replayed"] == 2 and worker.windows["replayed"] == 2
    assert worker.counters["forwarded"] == 1 and not tunnelled
