"""Extra UDP forwarding processes on the same port (SO_REUSEPORT), for more than one core.

With ``--udp-workers N`` the relay process keeps its own forwarding thread and
starts N-1 worker processes (multiprocessing spawn); each binds its own socket
to the same port with SO_REUSEPORT and the kernel spreads clients over the
sockets by address hash, so one client always lands on the same worker.

The control process still owns the session table. A worker holds a copy of the
route table and receives, over a pipe, the same ``(channels, entries)`` updates
the control process applies to its own (:meth:`RouteTable.update`), in the same
order. Updates are rare and small, so a pipe (ordered, with its own wake-up)
does what a shared-memory table would need a versioned lock-free layout for. A
worker sends back register pings from new addresses (the control process binds
and answers them) and, ten times a second, its counters.

Each worker's router keeps its own per-sender voice buckets (:class:`VoiceLimit`).
A sender's datagrams all come from its one bound address, and the kernel hashes
an address to one socket, so one worker sees (and limits) all of a sender's
voice: the limit is per socket, which is per sender as long as the set of
sockets does not change while the relay runs.

Messages on the pipe, as tuples: to a worker ``("update", channels, entries, silenced)``
(``silenced``: the tokens the operator muted),
``("limit", VoiceLimit | None)`` (a reload) and ``("stop",)``; from a worker
``("bind", token, addr, ping)`` and ``("counters", dict)``. A worker whose pipe
closes (its parent died) stops.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.connection
import threading
from collections.abc import Callable
from typing import Any

from relay.router import Addr, Counters, Router, RouteTable, VoiceLimit
from relay.udp import UdpThread, open_udp

COUNTER_PERIOD = 0.1  # seconds between counter reports of a worker


def _worker_main(
    host: str,
    port: int,
    rcvbuf: int,
    echo: bool,
    limit: VoiceLimit | None,
    conn: multiprocessing.connection.Connection,
) -> None:
    send_lock = threading.Lock()  # the UDP thread and this one both send on the pipe

    def send(msg: tuple[Any, ...]) -> None:
        with send_lock, contextlib.suppress(OSError):
            conn.send(msg)

    # Its own buckets, fed only by the datagrams this socket receives (see the module doc).
    router = Router(echo=echo, on_bind=lambda t, a, p: send(("bind", t, a, p)), limit=limit)
    sock = open_udp(host, port, rcvbuf, reuse_port=True)
    loop = UdpThread(sock, router)
    loop.start()
    try:
        while True:
            if conn.poll(COUNTER_PERIOD):
                msg = conn.recv()
                if msg[0] == "stop":
                    break
                if msg[0] == "limit":
                    router.set_limit(msg[1])
                    continue
                _kind, channels, entries, silenced = msg
                router.table = RouteTable.update(router.table, channels, entries, silenced=silenced)
            send(("counters", router.counters.as_dict()))
    except (EOFError, OSError, KeyboardInterrupt):
        pass  # the relay is gone or going: stop
    finally:
        loop.close()
        send(("counters", router.counters.as_dict()))
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
    ) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main, args=(host, port, rcvbuf, echo, limit, child), daemon=True
        )
        self.process.start()
        child.close()
        self.on_bind = on_bind
        self.counters: dict[str, int] = Counters().as_dict()

    def update(
        self,
        channels: set[str],
        entries: list[tuple[int, int, str, Addr | None]],
        silenced: set[int] | frozenset[int] = frozenset(),
    ) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("update", channels, entries, frozenset(silenced)))

    def set_limit(self, limit: VoiceLimit | None) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("limit", limit))

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
                elif msg[0] == "counters":
                    self.counters = msg[1]
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
