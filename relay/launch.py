"""Start and stop ``python -m relay`` as a child process: for the demo, tests and benchmarks.

The relay prints one line on stdout once it listens (with the real port, so
``--port 0`` works) and logs to stderr. Its stderr goes to a file the caller
gives, or nowhere: never to a pipe that nobody reads, which would fill up and
stall the relay once it had logged 64 KiB.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"relay listening on \S+ tcp=(\d+) udp=(\d+)")


def start_relay(
    *args: str, host: str = "127.0.0.1", log: IO[str] | None = None, root: Path = ROOT
) -> tuple[subprocess.Popen[str], int]:
    """Start a relay on ``host`` (a free port unless ``args`` say ``--port``).

    Returns the process and its port once it listens. ``log`` receives its stderr.
    ``root``: the checkout whose ``relay`` package runs (a benchmark may compare
    with an older one).
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "--host", host, "--port", "0", *args],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=log if log is not None else subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the relay prints it before anything else, or exits
    match = LISTENING.search(line)
    if match is None:
        stop_relay(proc)
        raise RuntimeError(f"the relay did not start (it printed {line!r})")
    return proc, int(match.group(1))


def stop_relay(proc: subprocess.Popen[str], timeout: float = 15.0) -> None:
    """SIGTERM (the relay says bye to its clients and logs its counters), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


# --- a private redis-server, for the cluster's tests and benchmark ------------------------


def redis_available() -> bool:
    """Whether ``redis-server`` is on PATH (scripts/setup.sh installs it)."""
    return shutil.which("redis-server") is not None


def start_redis(port: int = 0, timeout: float = 10.0) -> tuple[subprocess.Popen[bytes], int]:
    """A ``redis-server`` on loopback that keeps nothing on disk, on ``port`` (0: a free
    one). Returns the process and its port once it answers (itself: its process id)."""
    if port == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode} (port {port} taken?)")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"INFO server\r\n")  # ours, not another server on that port
                if f"process_id:{proc.pid}\r\n".encode() in s.recv(65536):
                    return proc, port
        except OSError:
            pass
        time.sleep(0.02)
    stop_redis(proc)
    raise RuntimeError("redis-server did not answer within the time limit")


def stop_redis(proc: subprocess.Popen[bytes], kill: bool = False) -> None:
    """SIGTERM (or SIGKILL), then wait."""
    if proc.poll() is None:
        if kill:
            proc.kill()
        else:
            proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
