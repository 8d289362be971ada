"""The admin socket: a Unix stream socket whose file permissions are the access control.

Each connection sends request lines and gets one reply line per request, in
order (:mod:`relay.admin_protocol`); the handler (:meth:`relay.admin.Admin.handle`)
does the work.
The socket file is created mode 0660 (owner and group: put the operators in the
relay's group), replaced if a stale one is left from a crash, and removed on
close. A line over the limit or a connection idle for a minute is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from relay import admin_protocol as ap

log = logging.getLogger("relay.admin")

MODE = 0o660
IDLE = 60.0  # seconds a connection may wait between requests


Handler = Callable[[ap.Request], Awaitable[Any]]


class AdminServer:
    """Serves ``handle`` on the Unix socket at ``path``: :meth:`start`, then :meth:`close`."""

    def __init__(self, path: str | Path, handle: Handler) -> None:
        self.path = Path(path)
        self.handle = handle
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Bind the socket (OSError if the path is taken by something else or unusable)."""
        _remove_stale(self.path)
        old = os.umask(0o117)  # the file is born 0660, never briefly wider
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, self.path, limit=ap.MAX_LINE + 1
            )
        finally:
            os.umask(old)
        os.chmod(self.path, MODE)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE)
                except (ValueError, asyncio.LimitOverrunError):  # a line over the limit
                    writer.write(ap.failed(f"request line over {ap.MAX_LINE} bytes"))
                    break
                if not line:
                    break
                writer.write(await self._reply(line))
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _reply(self, line: bytes) -> bytes:
        try:
            req = ap.parse_request(line)
            return ap.ok(await self.handle(req))
        except ap.AdminError as exc:
            return ap.failed(str(exc))
        except Exception as exc:  # a bug: never take the relay down with it
            log.exception("admin request failed: %r", line[:200])
            return ap.failed(f"internal error: {type(exc).__name__}: {exc}")


def _remove_stale(path: Path) -> None:
    """Remove a socket left by a relay that died; refuse to replace anything else."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody answers: stale
        return
    finally:
        probe.close()
    raise OSError(f"{path}: another relay is serving this admin socket")
