"""relay/launch.py: starting and stopping the relay daemon as a child process."""

from __future__ import annotations

import socket
import tempfile

import pytest

from relay.launch import start_relay, stop_relay


def test_start_on_a_free_port_log_to_a_file_stop_twice() -> None:
    with tempfile.TemporaryFile("w+") as log:
        proc, port = start_relay("--log-level", "debug", log=log)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass  # TCP and UDP share the port; TCP answers
        finally:
            stop_relay(proc)
            stop_relay(proc)  # idempotent
        assert proc.returncode == 0
        log.seek(0)
        assert "counters at exit" in log.read()  # stderr went to the file


def test_a_relay_that_cannot_start_is_an_error_and_leaves_nothing() -> None:
    with pytest.raises(RuntimeError, match="did not start"):
        start_relay("--port", "not-a-number")


def test_a_private_redis_server_answers_and_is_stopped(
    redis_server: tuple[object, int],
) -> None:
    from relay.launch import start_redis, stop_redis

    _proc, port = redis_server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(16).startswith(b"+PONG")
    with pytest.raises(RuntimeError, match="redis-server exited"):
        start_redis(port)  # the port is taken: a clear error, nothing left running
    proc, again = start_redis()
    stop_redis(proc, kill=True)
    assert proc.returncode is not None and again != port
