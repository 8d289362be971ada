"""``voicechat-admin``: the operator's command line, over the relay's admin socket.

Each subcommand is one request of :mod:`relay.admin_protocol`; the reply is
printed as a short table or line (``--json`` prints the result as JSON). Exit
status: 0 done, 1 the relay refused (its reason on stderr), 2 bad usage,
3 no relay answers at the socket (``status`` then prints that it is down).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from relay import admin_protocol as ap

DEFAULT_SOCKET = "/run/voicechat-relay/admin.sock"  # what docs/voicechat-relay.service sets
SOCKET_ENV = "VOICECHAT_ADMIN_SOCKET"
TIMEOUT = 15.0
DOWN = 3


def _duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``7d``: seconds (0: for ever)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    t = text.strip().lower()
    scale = units.get(t[-1:])
    number = t[:-1] if scale else t
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration like 90s, 15m, 2h, 7d"
        ) from None
    if value < 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError("a duration is 0 (for ever) or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="voicechat-admin", description=__doc__.split("\n")[0])
    p.add_argument(
        "--socket",
        default=os.environ.get(SOCKET_ENV, DEFAULT_SOCKET),
        help=f"the relay's admin socket (default ${SOCKET_ENV} or {DEFAULT_SOCKET})",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def cmd(name: str, req: type[ap.Request]) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=req.HELP, description=req.HELP)

    s = cmd("status", ap.Status)
    s.add_argument("--window", type=float, default=1.0, help="seconds to measure the rate over")
    cmd("users", ap.Users)
    cmd("channels", ap.Channels)
    k = cmd("kick", ap.Kick)
    k.add_argument("user", help="user id or exact name")
    k.add_argument("reason", nargs="?", default="")
    mu = cmd("mute", ap.Mute)
    mu.add_argument("user", help="user id or exact name")
    um = cmd("unmute", ap.Unmute)
    um.add_argument("user", help="user id or exact name")
    b = cmd("ban", ap.Ban)
    who = b.add_mutually_exclusive_group()
    who.add_argument("user", nargs="?", default="", help="user id or name: bans their address")
    b.add_argument("--address", default="", help="an address or network (10.0.0.0/8)")
    b.add_argument("--name", default="", help="a user name (look-alikes included)")
    b.add_argument(
        "--for",
        dest="duration",
        type=_duration,
        default=0.0,
        help="how long: 90s, 15m, 2h, 7d (default: for ever)",
    )
    b.add_argument("--reason", default="")
    u = cmd("unban", ap.Unban)
    u.add_argument("id", type=int, help="the ban's id (see bans)")
    cmd("bans", ap.Bans)
    ca = cmd("channel-add", ap.ChannelAdd)
    ca.add_argument("name")
    ca.add_argument("--description", default="")
    ca.add_argument("--max-users", type=int, default=0, help="0: no limit")
    ce = cmd("channel-edit", ap.ChannelEdit)
    ce.add_argument("name")
    ce.add_argument("--description", default=None)
    ce.add_argument("--max-users", type=int, default=None)
    cr = cmd("channel-rename", ap.ChannelRename)
    cr.add_argument("name")
    cr.add_argument("new_name")
    cx = cmd("channel-remove", ap.ChannelRemove)
    cx.add_argument("name")
    m = cmd("move", ap.Move)
    m.add_argument("user")
    m.add_argument("channel")
    say = cmd("say", ap.Say)
    say.add_argument("text")
    say.add_argument("--channel", default="", help="only this channel (default: everyone)")
    st = cmd("set", ap.Set)
    st.add_argument("key", help="a configuration key, as in relay.toml")
    st.add_argument("value")
    un = cmd("unset", ap.Unset)
    un.add_argument("key")
    cmd("settings", ap.Settings)
    cmd("reload", ap.Reload)
    return p


def request_of(args: argparse.Namespace) -> ap.Request:
    """The request a parsed command line stands for."""
    c = args.cmd
    if c == "status":
        return ap.Status(args.window)
    if c == "kick":
        return ap.Kick(args.user, args.reason)
    if c == "mute":
        return ap.Mute(args.user)
    if c == "unmute":
        return ap.Unmute(args.user)
    if c == "ban":
        return ap.Ban(args.user, args.address, args.name, args.duration, args.reason)
    if c == "unban":
        return ap.Unban(args.id)
    if c == "channel-add":
        return ap.ChannelAdd(args.name, args.description, args.max_users)
    if c == "channel-edit":
        return ap.ChannelEdit(args.name, args.description, args.max_users)
    if c == "channel-rename":
        return ap.ChannelRename(args.name, args.new_name)
    if c == "channel-remove":
        return ap.ChannelRemove(args.name)
    if c == "move":
        return ap.Move(args.user, args.channel)
    if c == "say":
        return ap.Say(args.text, args.channel)
    if c == "set":
        return ap.Set(args.key, args.value)
    if c == "unset":
        return ap.Unset(args.key)
    return ap.REQUESTS[c]()


def call(path: str, req: ap.Request, timeout: float = TIMEOUT) -> Any:
    """Send ``req`` to the admin socket at ``path``; its result, or AdminError / OSError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(req.encode())
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ap.AdminError("the relay closed the admin connection without a reply")
            reply += chunk
            if len(reply) > 64 * ap.MAX_LINE:
                raise ap.AdminError("the relay's reply is too long")
    return ap.parse_reply(reply)


def _show(cmd: str, result: Any) -> str:
    """The result for a person."""
    if cmd == "status":
        r = result
        return (
            f"up: {r['sessions']} session(s), {r['connections']} connection(s), "
            f"{r['channels']} channel(s), forwarding {r['forwarded_per_s']:g} datagrams/s "
            f"(port {r['port']}, up {r['uptime_s']:g} s)"
        )
    if cmd == "users":
        rows = [["ID", "NAME", "CHANNEL", "ADDRESS", "STATE"]]
        for u in result:
            state = ("connected" if u["connected"] else "in grace") + (
                "" if u["voice"] else ", no voice yet"
            )
            if u.get("server_muted"):
                state += ", muted by the server"
            rows.append([str(u["user_id"]), u["name"], u["channel"], u["address"], state])
        return _table(rows)
    if cmd == "channels":
        rows = [["NAME", "MEMBERS", "LIMIT", "FROM", "DESCRIPTION"]]
        for c in result:
            limit = str(c["max_users"]) if c["max_users"] else "-"
            rows.append([c["name"], str(c["members"]), limit, c["from"], c["description"]])
        return _table(rows)
    if cmd == "bans":
        rows = [["ID", "ADDRESS", "NAME", "UNTIL", "REASON"]]
        for b in result:
            until = (
                "for ever"
                if b["expires"] is None
                else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(b["expires"]))
            )
            rows.append([str(b["id"]), b["address"] or "-", b["name"] or "-", until, b["reason"]])
        return _table(rows)
    if cmd in ("mute", "unmute"):
        r = result
        done = "muted" if r["server_muted"] else "unmuted"
        return f"{r['name']} (#{r['user_id']}) {done}" + ("" if r["changed"] else " already")
    if cmd == "settings":
        return "\n".join(f"{k} = {json.dumps(v)}" for k, v in sorted(result.items())) or "(none)"
    return json.dumps(result) if result is not None else "ok"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        req = request_of(args)
    except ap.AdminError as exc:
        print(f"voicechat-admin: {exc}", file=sys.stderr)
        return 2
    try:
        result = call(args.socket, req)
    except ap.AdminError as exc:
        print(f"voicechat-admin: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        what = "down" if args.cmd == "status" else "not reachable"
        print(
            f"voicechat-admin: relay {what}: {args.socket}: {exc.strerror or exc}", file=sys.stderr
        )
        return DOWN
    print(json.dumps(result, indent=2) if args.json else _show(args.cmd, result))
    return 0


def entry() -> None:
    """The console script."""
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
