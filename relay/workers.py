"""Extra UDP forwarding processes on the same port (SO_REUSEPORT), for more than one core.

With ``--udp-workers N`` the relay process keeps its own forwarding thread and
starts N-1 worker processes (multiprocessing spawn); each binds its own socket
to the same port with SO_REUSEPORT. In protocol 1 the kernel spreads clients over
the sockets by address hash, so one client address always lands on the same worker.
In protocol 2 (sealed voice) the relay steers by the sender id instead
(:mod:`relay.steering`): every datagram of a session, from any address, lands on one
loop, the one whose replay window holds that session's history.

The control process still owns the session table. A worker holds a copy of the
route table and receives, over a pipe, the same ``(channels, entries, tunnelled)``
updates the control process applies to its own (:meth:`RouteTable.update`), in the
same order; a sealed worker also gets the peers' keys (each session's UDP key and its
channel's media key id) and the media keys, before the routes that need them, as the
control process's own :class:`relay.sealed_router.SealedRouter` does. Updates are
rare and small, so a pipe (ordered, with its own wake-up) does what a shared-memory
table would need a versioned lock-free layout for. A worker sends back register pings
from new addresses (the control process binds and answers them; in protocol 2 only
after the worker's replay window and the ping's tag accepted them), voice for
listeners on the TCP tunnel, and, ten times a second, its counters.

Each worker's router keeps its own per-sender voice buckets (:class:`VoiceLimit`).
A sender's datagrams all come to one socket (by address in protocol 1, by sender id
in protocol 2), so one worker sees (and limits) all of a sender's voice: the limit is
per socket, which is per sender as long as the set of sockets does not change while
the relay runs.

Messages on the pipe, as tuples: to a worker ``("update", channels, entries,
tunnelled, silenced, seq)`` (``silenced``: the tokens the operator muted),
``("peers", entries, removed)``, ``("media", {key id: key})``,
``("limit", VoiceLimit | None)`` (a reload) and ``("stop",)``; from a worker
``("ready",)`` once its socket is bound, ``("applied", seq)`` after each update,
``("bind", token, addr, ping)``,
``("tunnel", data, tokens)`` and ``("counters", dict, windows)``. A worker whose
pipe closes (its parent died) stops.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.connection
import threading
import time
from collections.abc import Callable
from typing import Any

from relay.router import Addr, Counters, Router, RouteTable, VoiceLimit
from relay.sealed_router import PeerEntry, SealedRouter
from relay.udp import UdpThread, open_udp

COUNTER_PERIOD = 0.1  # seconds between counter reports of a worker
READY_TIMEOUT = 30.0  # seconds a spawned worker may take to bind (a loaded machine)


def _worker_main(
    host: str,
    port: int,
    rcvbuf: int,
    echo: bool,
    limit: VoiceLimit | None,
    conn: multiprocessing.connection.Connection,
    sealed: bool = False,
) -> None:
    send_lock = threading.Lock()  # the UDP thread and this one both send on the pipe

    def send(msg: tuple[Any, ...]) -> None:
        with send_lock, contextlib.suppress(OSError):
            conn.send(msg)

    def on_bind(token: int, addr: Addr, ping: bytes) -> None:
        send(("bind", token, addr, ping))

    # Its own buckets, fed only by the datagrams this socket receives (see the module doc).
    router: Router
    if sealed:
        sealed_router = SealedRouter({}, echo=echo, on_bind=on_bind, limit=limit)
        sealed_router.on_tunnel = lambda data, tokens: send(("tunnel", data, tokens))
        router = sealed_router
    else:
        router = Router(echo=echo, on_bind=on_bind, limit=limit)

    def report() -> None:
        windows = sealed_router.window_totals() if sealed else {}
        send(("counters", router.counters.as_dict(), windows))

    sock = open_udp(host, port, rcvbuf, reuse_port=True)
    loop = UdpThread(sock, router)
    loop.start()
    send(("ready",))
    try:
        while True:
            if conn.poll(COUNTER_PERIOD):
                msg = conn.recv()
                kind = msg[0]
                if kind == "stop":
                    break
                if kind == "limit":
                    router.set_limit(msg[1])
                elif kind == "peers":
                    sealed_router.update_peers(msg[1], msg[2])
                elif kind == "media":
                    sealed_router.set_media(msg[1])
                else:
                    _kind, channels, entries, tunnelled, silenced, seq = msg
                    router.table = RouteTable.update(
                        router.table, channels, entries, tunnelled, silenced
                    )
                    send(("applied", seq))  # a register answer waits for every loop's table
                    continue
            report()
    except (EOFError, OSError, KeyboardInterrupt):
        pass  # the relay is gone or going: stop
    finally:
        loop.close()
        report()
        conn.close()


class Worker:
    """The control process's handle on one worker process."""

    def __init__(
        self,
        host: str,
        port: int,
        rcvbuf: int,
        echo: bool,
        on_bind: Callable[[int, Addr, bytes], None],
        limit: VoiceLimit | None = None,
        sealed: bool = False,
        on_tunnel: Callable[[bytes, tuple[int, ...]], None] | None = None,
    ) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main,
            args=(host, port, rcvbuf, echo, limit, child, sealed),
            daemon=True,
        )
        self.process.start()
        child.close()
        self.on_bind = on_bind
        self.on_tunnel = on_tunnel
        self.ready = False
        self._seq = 0  # route updates sent
        self.applied = 0  # route updates the worker has applied (it says so after each)
        self.counters: dict[str, int] = Counters().as_dict()
        self.windows: dict[str, int] = {}  # protocol 2: its replay windows, summed

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Block until the worker's socket is bound (RuntimeError if it is not in time):
        a sealed relay's steering needs the whole group before it serves."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            left = deadline - time.monotonic()
            if left <= 0 or not self.conn.poll(left) or not self.on_readable():
                raise RuntimeError(f"UDP worker {self.process.pid} did not start")

    def _send(self, msg: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(msg)

    def update(
        self,
        channels: set[str],
        entries: list[tuple[int, int, str, Addr | None]],
        silenced: set[int] | frozenset[int] = frozenset(),
        tunnelled: set[int] | frozenset[int] = frozenset(),
    ) -> None:
        self._seq += 1
        msg = ("update", channels, entries, frozenset(tunnelled), frozenset(silenced), self._seq)
        self._send(msg)

    @property
    def sent(self) -> int:
        """Route updates sent so far (compare with :attr:`applied`)."""
        return self._seq

    def update_peers(self, entries: list[PeerEntry], removed: list[int]) -> None:
        """Protocol 2: the sessions' keys, before the routes that use them."""
        self._send(("peers", entries, removed))

    def set_media(self, media: dict[int, bytes]) -> None:
        """Protocol 2: every media key by id (a whisper across channels is sealed again)."""
        self._send(("media", dict(media)))

    def set_limit(self, limit: VoiceLimit | None) -> None:
        self._send(("limit", limit))

    def on_readable(self) -> bool:
        """Read what the worker sent (call when the pipe is readable).

        False once the worker is gone (its pipe closed): stop watching the pipe,
        which would otherwise stay readable forever.
        """
        try:
            while self.conn.poll():
                msg = self.conn.recv()
                if msg[0] == "bind":
                    self.on_bind(msg[1], msg[2], msg[3])
                elif msg[0] == "tunnel":
                    if self.on_tunnel is not None:
                        self.on_tunnel(msg[1], msg[2])
                elif msg[0] == "counters":
                    self.counters, self.windows = msg[1], msg[2]
                elif msg[0] == "applied":
                    self.applied = msg[1]
                elif msg[0] == "ready":
                    self.ready = True
        except (EOFError, OSError):
            return False
        return True

    def stop(self, timeout: float = 3.0) -> None:
        if self.conn.closed:
            return
        with contextlib.suppress(OSError):
            self.conn.send(("stop",))
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.on_readable()  # the final counters
        self.conn.close()
