"""Start and stop ``python -m relay`` as a child process: for the demo, tests and benchmarks.

The relay prints one line on stdout once it listens (with the real port, so
``--port 0`` works) and logs to stderr. Its stderr goes to a file the caller
gives, or nowhere: never to a pipe that nobody reads, which would fill up and
stall the relay once it had logged 64 KiB.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
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
