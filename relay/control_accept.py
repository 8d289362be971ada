"""The first moments of a connection on a TLS relay's control port: TLS, or an old client.

The asyncio adapter around :mod:`relay.first_bytes`. Each accepted connection starts
with its transport paused, so nothing is read from it; the first byte is *peeked*
(``MSG_PEEK``, on a duplicate of the socket's descriptor, which the loop lets us
watch) and left in the kernel. A TLS ClientHello (anything but 0x00) goes on to
``loop.start_tls`` with the bytes untouched, and from there to the control server's
handler exactly as ``asyncio.start_server(ssl=...)`` would have handed it over: the
TLS path costs one peek more, no extra round trip. A connection whose first byte is
0x00 is a protocol-1 client (or noise): it is read in plain TCP, answered with
``error bad_version`` if it sent a protocol-1 message, and closed; every such
connection is counted by its verdict.

The whole wait is bounded: a connection that sends nothing is closed after the
handshake timeout (the auth timeout), and the TLS handshake gets what is left of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import cast

from relay.first_bytes import Hello, PlainHello, Verdict, classify
from relay.log_format import address

log = logging.getLogger("relay.control_accept")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
MIN_HANDSHAKE = 0.5  # seconds the TLS handshake gets however long the first byte took
STREAM_LIMIT = 64 * 1024  # asyncio.start_server's default buffer limit for the reader

# Verdicts counted (ControlServer.refused keys): a protocol-1 client told to upgrade, a
# connection that was neither TLS nor protocol 1, one that sent nothing in time.
OLD_PROTOCOL = Verdict.OLD_CLIENT.value
NOT_TLS = Verdict.NOT_PROTOCOL.value
HELLO_TIMEOUT = "hello_timeout"
COUNTED = (OLD_PROTOCOL, NOT_TLS, HELLO_TIMEOUT)


class SniffingAccept(asyncio.Protocol):
    """One new connection until it is TLS (then the handler has it) or refused."""

    def __init__(
        self,
        context: ssl.SSLContext,
        handle: Handler,
        timeout: float,
        count: Callable[[str], None],
        tasks: set[asyncio.Task[None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.context = context
        self.handle = handle
        self.timeout = timeout
        self.count = count
        self.tasks = tasks  # the pending handshakes, held so that none is collected
        self.clock = clock
        self.transport: asyncio.Transport | None = None
        self.opened = 0.0
        self._peek: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._plain: PlainHello | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = cast(asyncio.Transport, transport)
        # Before the transport's first read (scheduled after this call): the first
        # bytes must stay in the kernel for TLS to read them.
        t.pause_reading()
        self._loop = loop = asyncio.get_running_loop()
        self.opened = self.clock()
        self._timer = loop.call_later(self.timeout, self._timed_out)
        sock = t.get_extra_info("socket")
        try:
            # The loop refuses a reader on a transport's own descriptor; a duplicate of
            # it is the same socket, so peeking through it sees the same bytes.
            self._peek = sock.dup()
            loop.add_reader(self._peek.fileno(), self._readable)
        except (OSError, AttributeError):
            self._finish()
            t.abort()

    def _readable(self) -> None:
        peek = self._peek
        assert peek is not None and self.transport is not None
        try:
            first = peek.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            first = b""
        self._stop_peeking()
        if not first:  # closed (or reset) before it said anything
            self._finish()
            self.transport.close()
        elif classify(first[0]) is Hello.TLS:
            self._finish()
            task = asyncio.get_running_loop().create_task(self._tls())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        else:
            self._plain = PlainHello()
            self.transport.resume_reading()  # data_received from here on

    async def _tls(self) -> None:
        transport = self.transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, self.handle, loop=loop)
        left = max(MIN_HANDSHAKE, self.timeout - (self.clock() - self.opened))
        try:
            tls = await loop.start_tls(
                transport, protocol, self.context, server_side=True, ssl_handshake_timeout=left
            )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            # As asyncio's own server would: the handshake failed, start_tls closed it.
            log.debug("TLS handshake failed: %s", exc)
            return
        if tls is None:  # the peer went away during the handshake
            return
        protocol.connection_made(tls)  # the handler starts: as start_server(ssl=...) does

    def data_received(self, data: bytes) -> None:
        plain = self._plain
        transport = self.transport
        if plain is None or transport is None or transport.is_closing():
            return
        verdict = plain.feed(data)
        if verdict is Verdict.MORE:
            return
        self._refused(verdict.value)
        reply = plain.reply
        if reply:
            transport.write(reply)
        transport.close()  # after the reply is written

    def eof_received(self) -> bool | None:
        if self._plain is not None and self._plain.verdict is Verdict.MORE:
            self._refused(NOT_TLS)
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport is not None and not self.transport.is_closing():
            self._refused(HELLO_TIMEOUT)
            self.transport.abort()
        self._finish()

    def _refused(self, reason: str) -> None:
        self._finish()
        self.count(reason)
        peer = None if self.transport is None else self.transport.get_extra_info("peername")
        source = str(peer[0]).removeprefix("::ffff:") if isinstance(peer, tuple) else "?"
        log.info(
            "connection refused before TLS: %s",
            reason,
            extra={"event": "hello_refused", "code": reason, "address": address(source)},
        )

    def _stop_peeking(self) -> None:
        peek, self._peek = self._peek, None
        if peek is not None:
            if self._loop is not None:
                with contextlib.suppress(Exception):  # the loop may be closed already
                    self._loop.remove_reader(peek.fileno())
            peek.close()

    def _finish(self) -> None:
        self._stop_peeking()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Acceptor:
    """The protocol factory for a TLS relay's control port, and what it counted.

    ``handle`` is :meth:`relay.control_server.ControlServer.handle`; ``count`` is
    called with one of COUNTED per connection refused before TLS.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        handle: Handler,
        timeout: float,
        count: Callable[[str], None],
    ) -> None:
        self.context = context
        self.handle = handle
        self.timeout = timeout
        self.count = count
        self.tasks: set[asyncio.Task[None]] = set()

    def __call__(self) -> SniffingAccept:
        return SniffingAccept(self.context, self.handle, self.timeout, self.count, self.tasks)

    async def close(self) -> None:
        """Cancel the handshakes still under way (the relay stops)."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
