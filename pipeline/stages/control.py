"""The control process: the TCP session to the relay, driven by pipeline/core/control_session.py.

This is the thin adapter: it owns the socket, the clock and the bus client;
every decision is the ControlSession's.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time

from pipeline.core.control_session import ControlSession
from pipeline.ipc import events as ev
from pipeline.ipc.bus import BusAddress, BusClient
from pipeline.ipc.child_process import StopFlag, child_setup

CONNECT_TIMEOUT = 2.0
SNAPSHOT_INTERVAL = 1.0  # re-publish the whole state for subscribers that joined late
log = logging.getLogger("control")


def run(bus: BusAddress, host: str, port: int, name: str, channel: str = "") -> None:
    """Process entry point: keep the session to the relay until told to quit."""
    stop = child_setup("control")
    session = ControlSession(name=name, host=host, port=port, wanted_channel=channel)
    client = BusClient(bus, topics=("cmd.",))
    sock: socket.socket | None = None
    next_snapshot = 0.0
    try:
        while not stop.check_parent():
            now = time.monotonic()
            if sock is None and session.connect_due(now):
                sock = _connect(session, host, port, now)
            if sock is not None:
                sock = _flush(session, sock)
            for event in session.take_events():
                client.publish(event)
            if now >= next_snapshot:
                for event in session.snapshot():
                    client.publish(event)
                next_snapshot = now + SNAPSHOT_INTERVAL
            timeout = min(session.next_deadline(now), next_snapshot) - now
            ready = client.wait((sock.fileno(),) if sock else (), max(0.0, min(timeout, 1.0)))
            now = time.monotonic()
            for cmd in client.poll(0):
                _command(session, cmd, stop)
            if sock is not None and sock.fileno() in ready:
                sock = _receive(session, sock, now)
            session.tick(now)
        session.quit()
        if sock is not None:
            _flush(session, sock)
    finally:
        if sock is not None:
            sock.close()
        client.publish(ev.ConnectionState(ev.STOPPED, f"{host}:{port}", reason=stop.reason))
        client.close()


def _connect(session: ControlSession, host: str, port: int, now: float) -> socket.socket | None:
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        session.connect_failed(
            time.monotonic(), f"cannot reach {host}:{port}: {exc.strerror or exc}"
        )
        return None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(CONNECT_TIMEOUT)  # bounds a send to a relay that stopped reading
    session.connected(now)
    return sock


def _flush(session: ControlSession, sock: socket.socket) -> socket.socket | None:
    data = session.take_outgoing()
    try:
        if data:
            sock.sendall(data)
    except OSError as exc:
        session.disconnected(time.monotonic(), f"send failed: {exc}")
        sock.close()
        return None
    if session.take_close():
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        return None
    return sock


def _receive(session: ControlSession, sock: socket.socket, now: float) -> socket.socket | None:
    try:
        data = sock.recv(65536)
    except OSError as exc:
        data, reason = b"", f"connection lost: {exc}"
    else:
        reason = "the relay closed the connection"
    if not data:
        sock.close()
        session.disconnected(now, reason)
        return None
    session.received(data, now)
    return sock


def _command(session: ControlSession, cmd: ev.Event, stop: StopFlag) -> None:
    if isinstance(cmd, ev.JoinCmd):
        session.join(cmd.channel)
    elif isinstance(cmd, ev.ChatCmd):
        session.chat(cmd.text)
    elif isinstance(cmd, ev.QuitCmd):
        stop.set(cmd.reason or "quit")
