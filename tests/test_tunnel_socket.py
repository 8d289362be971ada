"""pipeline/ipc/tunnel_socket.py: the local datagram socket between network and control."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from pipeline.ipc import tunnel_socket as ts


def pair(folder: Path) -> tuple[ts.TunnelSocket, ts.TunnelSocket]:
    return (ts.TunnelSocket(str(folder), ts.NETWORK, ts.CONTROL),
            ts.TunnelSocket(str(folder), ts.CONTROL, ts.NETWORK))  # fmt: skip


def wait(sock: ts.TunnelSocket, n: int) -> list[tuple[int, bytes]]:
    buf = bytearray(ts.MAX_MESSAGE + 1)
    got: list[tuple[int, bytes]] = []
    end = time.monotonic() + 2
    while len(got) < n and time.monotonic() < end:
        got += sock.receive(buf)
        time.sleep(0.001)
    return got


def test_messages_go_both_ways_whole_and_in_order(tmp_path: Path) -> None:
    net, ctl = pair(tmp_path)
    try:
        now = time.monotonic_ns()
        datagram = bytes(range(256)) * 5
        assert net.send(ts.VOICE, datagram, now) and net.send(ts.PATH_TCP, b"", now)
        assert wait(ctl, 2) == [(ts.VOICE, datagram), (ts.PATH_TCP, b"")]
        assert ctl.send(ts.VOICE, b"down", now)
        assert wait(net, 1) == [(ts.VOICE, b"down")]
    finally:
        net.close()
        ctl.close()
    assert not (tmp_path / ts.NETWORK).exists() and not (tmp_path / ts.CONTROL).exists()


def test_more_than_the_kernels_ten_unread_datagrams_get_through_once_connected(
    tmp_path: Path,
) -> None:
    net, ctl = pair(tmp_path)
    try:
        now = time.monotonic_ns()
        ctl.tick(now)  # the receiver connects to its peer: no 10-datagram limit for it
        sent = sum(net.send(ts.VOICE, bytes(200), now) for _ in range(100))
        assert sent == 100 and len(wait(ctl, 100)) == 100
    finally:
        net.close()
        ctl.close()


def test_a_missing_peer_loses_the_message_and_a_restarted_one_is_found(tmp_path: Path) -> None:
    net = ts.TunnelSocket(str(tmp_path), ts.NETWORK, ts.CONTROL)
    try:
        now = time.monotonic_ns()
        assert not net.send(ts.VOICE, b"x", now) and net.unsent == 1
        ctl = ts.TunnelSocket(str(tmp_path), ts.CONTROL, ts.NETWORK)
        assert net.send(ts.VOICE, b"first", now + ts.RETRY_NS)
        assert wait(ctl, 1) == [(ts.VOICE, b"first")]
        ctl.close()  # the control process died; its successor binds the same path
        ctl = ts.TunnelSocket(str(tmp_path), ts.CONTROL, ts.NETWORK)
        later = now + 2 * ts.RETRY_NS
        assert not net.send(ts.VOICE, b"lost", later)  # to the dead socket: refused, counted
        assert net.send(ts.VOICE, b"again", later)
        assert wait(ctl, 1) == [(ts.VOICE, b"again")]
        ctl.close()
    finally:
        net.close()


@given(st.binary(max_size=ts.MAX_MESSAGE + 10))
def test_fuzz_any_datagram_from_the_peer_is_a_message_or_counted(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        net, ctl = pair(Path(folder))
        try:
            ctl.tick(0)
            net.sock.sendto(data, ctl.path)
            time.sleep(0.001)
            got = ctl.receive(bytearray(ts.MAX_MESSAGE + 1))
            if data and data[0] in ts.KINDS and len(data) <= ts.MAX_MESSAGE:
                assert got == [(data[0], data[1:])] and ctl.bad == 0
            else:
                assert got == [] and ctl.bad == 1
        finally:
            net.close()
            ctl.close()
