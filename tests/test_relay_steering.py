"""relay/steering.py: the reuseport program that sends each sealed session to one socket."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.protocol.sealed_datagram import HEADER, KIND_VOICE, VERSION
from relay.steering import program, run, steer_by_sender


def header(sid: int) -> bytes:
    return HEADER.pack(VERSION, KIND_VOICE, 1, sid, 7, 0)


@given(st.integers(1, 16), st.binary(max_size=64))
def test_the_program_picks_sid_mod_n_and_socket_0_for_short_datagrams(
    n: int, payload: bytes
) -> None:
    index = run(program(n), payload)
    assert 0 <= index < n
    if len(payload) >= 7:
        assert index == struct.unpack_from(">I", payload, 3)[0] % n
    else:
        assert index == 0  # a keepalive or garbage: the relay process's own socket


def test_a_group_of_no_sockets_is_refused() -> None:
    with pytest.raises(ValueError):
        program(0)


def test_the_kernel_sends_every_datagram_of_a_sender_to_one_socket_whatever_its_address() -> None:
    socks = []
    try:
        for _ in range(2):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", socks[0].getsockname()[1] if len(socks) > 1 else 0))
            s.setblocking(False)
        steer_by_sender(socks[0], 2)
        port = socks[0].getsockname()[1]
        for sid in range(1, 7):
            for source in range(1, 9):  # many addresses and ports: the hash would spread them
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                    c.bind((f"127.0.0.{source}", 0))
                    c.sendto(header(sid) + b"x" * 30, ("127.0.0.1", port))
        time.sleep(0.1)
        got: list[list[int]] = []
        for s in socks:
            sids = []
            while True:
                try:
                    sids.append(struct.unpack_from(">I", s.recv(100), 3)[0])
                except BlockingIOError:
                    break
            got.append(sids)
        assert sorted(got[0] + got[1]) == sorted(list(range(1, 7)) * 8)  # none lost
        by_socket = [set(g) for g in got]
        assert by_socket[0].isdisjoint(by_socket[1])  # a sender on one socket only
        assert len(by_socket[0]) == len(by_socket[1]) == 3  # sid % 2 splits them evenly
    finally:
        for s in socks:
            s.close()
