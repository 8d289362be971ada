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
