"""relay/admin_server.py: the Unix socket adapter, in process, with a stub handler."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relay import admin_protocol as ap
from relay.admin_server import AdminServer


async def echo(req: ap.Request) -> Any:
    if isinstance(req, ap.Kick) and req.user == "boom":
        raise RuntimeError("a bug")
    if isinstance(req, ap.Kick) and req.user == "nobody":
        raise ap.AdminError("no user 'nobody'")
    return {"cmd": req.CMD}


async def exchange(path: Path, *lines: bytes) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    out = []
    for line in lines:
        try:
            writer.write(line)
            await writer.drain()
        except ConnectionError:
            break  # the server closed it
        reply = await asyncio.wait_for(reader.readline(), 5)
        if not reply:
            break
        out.append(json.loads(reply))
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return out


def test_requests_are_answered_in_order_and_bad_ones_do_not_end_the_connection(
    tmp_path: Path,
) -> None:
    async def main() -> list[dict[str, Any]]:
        server = AdminServer(tmp_path / "a.sock", echo)
        await server.start()
        try:
            return await exchange(
                tmp_path / "a.sock",
                ap.Users().encode(),
                b"garbage\n",
                ap.Kick("nobody").encode(),
                ap.Kick("boom").encode(),
                ap.Channels().encode(),
            )
        finally:
            await server.close()

    replies = asyncio.run(main())
    assert replies[0] == {"ok": True, "result": {"cmd": "users"}}
    assert not replies[1]["ok"] and "not JSON" in replies[1]["error"]
    assert replies[2] == {"ok": False, "error": "no user 'nobody'"}
    assert not replies[3]["ok"] and "internal error" in replies[3]["error"]
    assert replies[4] == {"ok": True, "result": {"cmd": "channels"}}
    assert not (tmp_path / "a.sock").exists()  # removed on close


def test_the_socket_is_owner_and_group_only(tmp_path: Path) -> None:
    async def main() -> int:
        server = AdminServer(tmp_path / "a.sock", echo)
        await server.start()
        try:
            return stat.S_IMODE(os.stat(tmp_path / "a.sock").st_mode)
        finally:
            await server.close()

    assert asyncio.run(main()) == 0o660


def test_a_line_over_the_limit_is_refused_and_closed(tmp_path: Path) -> None:
    async def main() -> list[dict[str, Any]]:
        server = AdminServer(tmp_path / "a.sock", echo)
        await server.start()
        try:
            return await exchange(tmp_path / "a.sock", b"x" * (ap.MAX_LINE + 10) + b"\n", b"{}\n")
        finally:
            await server.close()

    (reply,) = asyncio.run(main())
    assert not reply["ok"] and "over" in reply["error"]


def test_a_stale_socket_is_replaced_but_nothing_else_is(tmp_path: Path) -> None:
    stale = tmp_path / "a.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(stale))
    dead.close()  # the file stays, nobody listens: what a crashed relay leaves

    async def start_stop(path: Path) -> None:
        server = AdminServer(path, echo)
        await server.start()
        await server.close()

    asyncio.run(start_stop(stale))
    plain = tmp_path / "file"
    plain.write_text("precious")
    with pytest.raises(OSError, match="not a socket"):
        asyncio.run(start_stop(plain))
    assert plain.read_text() == "precious"


def test_a_socket_in_use_is_not_taken_over(tmp_path: Path) -> None:
    async def main() -> None:
        first = AdminServer(tmp_path / "a.sock", echo)
        await first.start()
        try:
            with pytest.raises(OSError, match="another relay"):
                await AdminServer(tmp_path / "a.sock", echo).start()
        finally:
            await first.close()

    asyncio.run(main())


def test_the_relay_will_not_replace_a_file_with_its_socket(tmp_path: Path) -> None:
    plain = tmp_path / "admin.sock"
    plain.write_text("precious")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "relay",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--admin-socket",
            str(plain),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1 and plain.read_text() == "precious"
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("voicechat-relay: cannot start:") and "not a socket" in last
