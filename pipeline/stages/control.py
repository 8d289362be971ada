"""The control process: the TCP session to the relay, driven by pipeline/core/control_session.py.

This is the thin adapter: it owns the socket and the clock; every decision is
the ControlSession's. The connection is TLS; the relay's certificate is checked
against the client's pins (pipeline/core/pins.py, trust on first use) before a
byte of the session is sent. It keeps the session token in the client's private state
folder, so that a control process restarted after a crash resumes the same
session (same user id and name, no ghost of itself) instead of authenticating anew.

The TCP tunnel: voice from the network stage (over the local socket of
pipeline/ipc/tunnel_socket.py) goes to the relay in ``voice`` frames, and the relay's
come back the same way. TCP holds everything behind a frame it must resend, so voice
is written only while the kernel has little of ours unsent (``SIOCOUTQNSD``); the rest
waits in a short :class:`relay.voice_queue.VoiceQueue` (a fifth of a second at most, the
oldest dropped first), and control messages are never held behind it.

Several relays: each connection goes to the session's current relay
(:attr:`ControlSession.target`), whose pin is checked under its own address; the
fingerprints a welcome vouched for are pinned here (never replacing a pin already there).
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.control_session import ControlSession
from pipeline.core.pins import PinFile, PinsUnreadable, Trust, pin_key
from pipeline.core.relays import Relay, server_text
from pipeline.ipc import events as ev
from pipeline.ipc import tunnel_socket as ts
from pipeline.stages.runtime import StageRuntime, Wiring
from relay.protocol.widths import U64_MAX
from relay.tls import client_context, fingerprint
from relay.voice_queue import RETRY, VoiceQueue, kernel_unsent

CONNECT_TIMEOUT = 2.0
SNAPSHOT_INTERVAL = 1.0  # re-publish the whole state for subscribers that joined late
MAX_WAIT = 1.0  # seconds between looks at the stop flag
TOKEN_FILE = "session-token"  # in the state folder (0700): the token is a secret


@dataclass(frozen=True, slots=True)
class ControlConfig:
    wiring: Wiring
    host: str
    port: int
    name: str
    channel: str = ""  # join this channel after connecting
    loss_feedback: bool = True  # tell the relay what we receive of each speaker
    password: str = ""
    pins_file: str = ""  # "": pipeline.core.pins.default_pins_path()
    accept_new_certificate: bool = False  # replace a changed pin (the user said so)
    fallbacks: tuple[tuple[str, int], ...] = ()  # more relays, tried in turn (SPEC.md)


def run(cfg: ControlConfig) -> None:
    """Process entry point: keep the session to the relay until told to quit."""
    with StageRuntime("control", cfg.wiring) as rt:
        token_file = Path(cfg.wiring.state_dir) / TOKEN_FILE if cfg.wiring.state_dir else None
        saved = _load_token(token_file) if cfg.wiring.restarted else 0
        session = ControlSession(
            name=cfg.name,
            host=cfg.host,
            port=cfg.port,
            wanted_channel=cfg.channel,
            token=saved,
            loss_feedback=cfg.loss_feedback,
            password=cfg.password,
            fallbacks=list(cfg.fallbacks),
        )
        tls = _Tls(cfg.pins_file, cfg.accept_new_certificate)
        tunnel = _Tunnel(cfg.wiring.state_dir) if cfg.wiring.state_dir else None
        if tunnel is not None:
            rt.on_close(tunnel.local.close)
        rt.on(ev.JoinCmd, lambda cmd: session.join(cmd.channel))
        rt.on(ev.ChatCmd, lambda cmd: session.chat(cmd.text))
        rt.on(ev.MuteCmd, lambda cmd: session.set_self(muted=cmd.muted))
        rt.on(ev.DeafenCmd, lambda cmd: session.set_self(deafened=cmd.deafened))
        if cfg.loss_feedback:
            rt.on(ev.DecodeStats, lambda stats: session.heard(stats, time.monotonic()))
        sock: socket.socket | None = None
        try:
            next_snapshot = 0.0
            while rt.running:
                now = time.monotonic()
                if sock is None and session.connect_due(now):
                    sock = _connect(session, session.target, now, tls)
                if sock is not None:
                    sock = _flush(session, sock)
                if tunnel is not None:
                    tunnel.to_network(session)
                    if sock is not None and tunnel.waiting():
                        sock = tunnel.write(session, sock, None, now)
                _vouch(session, tls)
                for event in session.take_events():
                    rt.publish(event)
                if now >= next_snapshot:
                    for event in session.snapshot():
                        rt.publish(event)
                    next_snapshot = now + SNAPSHOT_INTERVAL
                timeout = min(session.next_deadline(now), next_snapshot) - now
                if tunnel is not None and tunnel.waiting():
                    timeout = min(timeout, RETRY)  # voice waits for the socket: look again soon
                fds: tuple[int, ...] = (sock.fileno(),) if sock else ()
                if tunnel is not None:
                    fds += (tunnel.local.fileno(),)
                ready = rt.wait(fds, max(0.0, min(timeout, MAX_WAIT)))
                now = time.monotonic()
                if sock is not None and sock.fileno() in ready:
                    sock = _receive(session, sock, now)
                if tunnel is not None and tunnel.local.fileno() in ready:
                    sock = tunnel.from_network(session, sock, now)
                if session.token != saved and token_file is not None:
                    saved = session.token
                    _save_token(token_file, saved)
                session.tick(now)
            session.quit()
            if sock is not None:
                sock = _flush(session, sock)
        finally:
            if sock is not None:
                sock.close()
            server = server_text(session.host, session.port)
            rt.publish(ev.ConnectionState(ev.STOPPED, server, reason=rt.stop.reason))


class _Tunnel:
    """The control process's end of the TCP tunnel: the local socket to the network
    stage and the voice waiting for the TLS socket."""

    def __init__(self, state_dir: str) -> None:
        self.local = ts.TunnelSocket(state_dir, ts.CONTROL, ts.NETWORK)
        self.queue = VoiceQueue()
        self._buf = bytearray(ts.MAX_MESSAGE + 1)

    def waiting(self) -> bool:
        return len(self.queue) > 0

    def from_network(
        self, session: ControlSession, sock: socket.socket | None, now: float
    ) -> socket.socket | None:
        """What the network stage sent: its path, and voice for the relay."""
        for kind, body in self.local.receive(self._buf):
            if kind == ts.VOICE:
                frame = session.voice_frame(body)
                if frame is not None and sock is not None:
                    sock = self.write(session, sock, frame, now)
            else:
                session.voice_path(kind == ts.PATH_TCP)
        if sock is not None:
            sock = _flush(session, sock)  # a tunnel request the path change made
        return sock

    def to_network(self, session: ControlSession) -> None:
        """Voice the relay sent through the connection, for the network stage."""
        now = time.monotonic_ns()
        self.local.tick(now)
        for datagram in session.take_voice():
            self.local.send(ts.VOICE, datagram, now)

    def write(
        self, session: ControlSession, sock: socket.socket, frame: bytes | None, now: float
    ) -> socket.socket | None:
        """Write ``frame`` (and what waits) as far as the socket takes it unsent."""
        unsent = kernel_unsent(sock.fileno())
        if frame is None:
            frames = self.queue.take(unsent, now)
        else:
            frames = self.queue.offer(frame, unsent, now)
        if not frames:
            return sock
        try:
            sock.sendall(b"".join(frames))
        except OSError as exc:
            session.disconnected(time.monotonic(), f"send failed: {exc}")
            sock.close()
            self.queue.clear()
            return None
        return sock


def _load_token(path: Path | None) -> int:
    """The token a previous control process of this client saved, or 0."""
    if path is None:
        return 0
    try:
        text = path.read_text().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() and 0 < int(text) <= U64_MAX else 0


def _save_token(path: Path, token: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(str(token))
    os.replace(tmp, path)  # whole or not at all, even if this process dies mid-write


class _Tls:
    """The TLS context and the pins, with what this client was told about a changed pin."""

    def __init__(self, pins_file: str = "", accept_changed: bool = False) -> None:
        self.context = client_context()
        self.pins = PinFile(pins_file or None)
        self.accept_changed = accept_changed


def _vouch(session: ControlSession, tls: _Tls) -> None:
    """Pin what the welcome vouched for; a pin already there stays, and the user is told."""
    for relay in session.take_vouched():
        key = pin_key(relay.host, relay.port)
        try:
            v = tls.pins.vouch(key, relay.fingerprint)
        except (OSError, PinsUnreadable) as exc:  # the vouched one still holds (_connect)
            session.notice(f"could not pin the certificate of {relay.server}: {exc}")
            continue
        if v.trust is Trust.NEW:
            session.notice(
                f"pinned the certificate of {relay.server} as {session.target.server} "
                f"vouches for it: {relay.fingerprint}"
            )
        elif v.trust is Trust.CHANGED:
            session.notice(
                f"the relay {session.target.server} vouches for {relay.server} with the "
                f"certificate {relay.fingerprint}, but you pinned {v.pinned} for it: "
                "your pin is kept"
            )


def _connect(session: ControlSession, relay: Relay, now: float, tls: _Tls) -> socket.socket | None:
    host, port, server = relay.host, relay.port, pin_key(relay.host, relay.port)
    try:
        raw = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        session.connect_failed(
            time.monotonic(), f"cannot reach {host}:{port}: {exc.strerror or exc}"
        )
        return None
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    raw.settimeout(CONNECT_TIMEOUT)  # bounds the handshake, and a send to a relay that stopped
    try:
        sock = tls.context.wrap_socket(raw, server_hostname=host)
    except (OSError, ssl.SSLError) as exc:
        raw.close()
        session.connect_failed(
            time.monotonic(),
            f"TLS handshake with {host}:{port} failed ({exc}); a relay started with "
            "--insecure speaks protocol 1, which this client does not",
        )
        return None
    der = sock.getpeercert(binary_form=True)
    shown = fingerprint(der) if der else "none"
    try:
        pinned = server in tls.pins.load()
        if relay.fingerprint and shown != relay.fingerprint and not pinned:
            # Vouched for, but its pin could not be written: the vouched one still holds.
            sock.close()
            session.refused(
                f"the certificate of {server} is not the one vouched for: vouched "
                f"{relay.fingerprint}, now shown {shown}"
            )
            return None
        verdict = tls.pins.check(server, shown, tls.accept_changed)
    except PinsUnreadable as exc:  # fail closed: no certificate is trusted unchecked
        sock.close()
        session.refused(str(exc))
        return None
    if verdict.trust is Trust.CHANGED and not tls.accept_changed:
        sock.close()
        session.refused(verdict.message(server, shown))
        return None
    if verdict.trust is not Trust.PINNED:
        session.notice(f"pinned the certificate of {server}: {shown}")
    tls.accept_changed = False  # accepted once: from now on the new pin holds
    try:
        peer = str(sock.getpeername()[0])  # the family create_connection found working
    except OSError:
        peer = ""
    session.connected(now, peer)
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
    if isinstance(sock, ssl.SSLSocket):
        # Decrypted bytes can wait inside the TLS layer with nothing left on the fd.
        while pending := sock.pending():
            data += sock.recv(pending)
    session.received(data, now)
    return sock
