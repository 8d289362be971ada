"""``python -m relay`` / ``voicechat-relay``: the standalone relay daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence

from relay.limits import CONNECT_BURST, CONNECT_RATE, PER_ADDRESS_CONNECTIONS, PER_ADDRESS_SESSIONS
from relay.lograte import install as install_log_rate_limit
from relay.protocol.messages import MAX_CHANNEL
from relay.router import (
    DEFAULT_BURST_S,
    DEFAULT_BYTES_PER_S,
    DEFAULT_DATAGRAMS_PER_S,
    VoiceLimit,
)
from relay.server import RelayConfig, run
from relay.session_table import DEFAULT_CHANNELS, DEFAULT_GRACE
from relay.udp import RCVBUF


def _channel(value: str) -> str:
    name = value.strip()
    if not name or len(name) > MAX_CHANNEL or any(ord(c) < 0x20 for c in name):
        raise argparse.ArgumentTypeError(f"bad channel name {value!r}")
    return name


def _positive(value: str) -> float:
    x = float(value)
    if not (x > 0 and x != float("inf")):
        raise argparse.ArgumentTypeError("must be a positive number")
    return x


def _count(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 (no limit) or more")
    return n


def _rate(value: str) -> float:
    x = float(value)
    if not x >= 0:
        raise argparse.ArgumentTypeError("must be 0 (no limit) or a positive rate")
    return x


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="voicechat-relay",
        description="Voice chat relay: TCP control server and UDP voice router on one port.",
    )
    ap.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    ap.add_argument(
        "--port", type=int, default=8080, help="TCP and UDP port (default 8080; 0 = any free)"
    )
    ap.add_argument("--echo", action="store_true", help="echo mode: voice goes back to its sender")
    ap.add_argument(
        "--channel",
        action="append",
        type=_channel,
        dest="channels",
        metavar="NAME",
        help="a channel (repeatable; the first is the default; default "
        + ", ".join(DEFAULT_CHANNELS)
        + ")",
    )
    ap.add_argument(
        "--grace",
        type=_positive,
        default=DEFAULT_GRACE,
        help=f"seconds a session outlives its TCP connection (default {DEFAULT_GRACE:g})",
    )
    ap.add_argument(
        "--auth-timeout",
        type=_positive,
        default=10.0,
        help="seconds a new connection has to authenticate (default 10)",
    )
    ap.add_argument(
        "--stats-interval",
        type=_positive,
        default=60.0,
        help="seconds between counter log lines (default 60)",
    )
    ap.add_argument(
        "--udp",
        choices=("thread", "asyncio"),
        default="thread",
        help="UDP forwarding loop: a blocking thread (default) or asyncio (slower, for comparison)",
    )
    ap.add_argument(
        "--udp-workers",
        type=int,
        default=1,
        help="forwarding loops sharing the port (SO_REUSEPORT): this process's thread plus "
        "N-1 worker processes; default 1",
    )
    ap.add_argument(
        "--max-clients",
        type=int,
        default=2000,
        help="most connections, and most sessions (those in grace included); default 2000",
    )
    ap.add_argument(
        "--max-per-address",
        type=_count,
        default=PER_ADDRESS_CONNECTIONS,
        metavar="N",
        help="most connections open from one source address; 0 = no limit; "
        f"default {PER_ADDRESS_CONNECTIONS}",
    )
    ap.add_argument(
        "--max-sessions-per-address",
        type=_count,
        default=PER_ADDRESS_SESSIONS,
        metavar="N",
        help="most sessions (those in grace included) from one source address; 0 = no limit; "
        f"default {PER_ADDRESS_SESSIONS}",
    )
    ap.add_argument(
        "--connect-rate",
        type=_rate,
        default=CONNECT_RATE,
        metavar="R",
        help=f"new connections per second from one source address; 0 = no limit; "
        f"default {CONNECT_RATE:g}",
    )
    ap.add_argument(
        "--connect-burst",
        type=_rate,
        default=CONNECT_BURST,
        metavar="N",
        help=f"new connections one address may open at once above the rate; "
        f"default {CONNECT_BURST:g}",
    )
    ap.add_argument(
        "--udp-rcvbuf",
        type=int,
        default=RCVBUF,
        help=f"UDP receive buffer to ask the kernel for, in bytes (default {RCVBUF})",
    )
    ap.add_argument(
        "--voice-datagrams",
        type=_positive,
        default=DEFAULT_DATAGRAMS_PER_S,
        metavar="N",
        help="most voice datagrams per second one session may send (register pings "
        f"included); default {DEFAULT_DATAGRAMS_PER_S:g}, one Opus stream needs 50",
    )
    ap.add_argument(
        "--voice-bytes",
        type=_positive,
        default=DEFAULT_BYTES_PER_S,
        metavar="B",
        help="most voice bytes per second one session may send; default "
        f"{DEFAULT_BYTES_PER_S:g}, one Opus stream at 510 kb/s needs 64950",
    )
    ap.add_argument(
        "--voice-burst",
        type=_positive,
        default=DEFAULT_BURST_S,
        metavar="S",
        help=f"seconds of either rate a session may send at once; default {DEFAULT_BURST_S:g}",
    )
    ap.add_argument(
        "--no-voice-limit",
        action="store_true",
        help="no per-session voice limit (for load tests)",
    )
    _security_flags(ap)
    ap.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="default info",
    )
    return ap


def _security_flags(ap: argparse.ArgumentParser) -> None:
    """TLS, the password and protocol 1 (docs/security.md)."""
    sec = ap.add_argument_group("security (docs/security.md)")
    sec.add_argument("--tls-cert", metavar="FILE", help="PEM certificate (chain) for TLS; "
                     "default: a self-signed one created in --data-dir")  # fmt: skip
    sec.add_argument("--tls-key", metavar="FILE", help="PEM key of --tls-cert (default: in it)")
    sec.add_argument("--data-dir", metavar="DIR", help="where the self-signed identity is kept "
                     "(default $XDG_DATA_HOME/voicechat-relay)")  # fmt: skip
    sec.add_argument("--password-file", metavar="FILE", help="clients must give the password "
                     "in FILE (its first line) to join")  # fmt: skip
    sec.add_argument("--insecure", action="store_true", help="protocol 1: plain TCP and plain "
                     "voice, readable by anyone on the path (tests and benchmarks)")  # fmt: skip


def _read_password(path: str) -> str:
    try:
        lines = open(path, encoding="utf-8").read().splitlines()  # noqa: SIM115
    except OSError as exc:
        build_parser().error(f"--password-file: {exc}")
    if not lines or not lines[0]:
        build_parser().error(f"--password-file {path}: the first line is empty")
    return lines[0]


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if not 0 <= args.port <= 0xFFFF:
        build_parser().error("--port must be 0..65535")
    voice_limit = None
    if not args.no_voice_limit:
        try:
            voice_limit = VoiceLimit(args.voice_datagrams, args.voice_bytes, args.voice_burst)
        except ValueError as exc:
            build_parser().error(str(exc))
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_log_rate_limit()  # under load, no log line per event
    config = RelayConfig(
        host=args.host,
        port=args.port,
        echo=args.echo,
        channels=args.channels or list(DEFAULT_CHANNELS),
        grace=args.grace,
        auth_timeout=args.auth_timeout,
        stats_interval=args.stats_interval,
        udp=args.udp,
        udp_rcvbuf=args.udp_rcvbuf,
        udp_workers=max(1, args.udp_workers) if args.udp == "thread" else 1,
        max_clients=args.max_clients,
        voice_limit=voice_limit,
        per_address_connections=args.max_per_address,
        per_address_sessions=args.max_sessions_per_address,
        connect_rate=args.connect_rate,
        connect_burst=args.connect_burst,
        insecure=args.insecure,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        data_dir=args.data_dir,
        password=_read_password(args.password_file) if args.password_file else None,
    )
    if args.insecure and (args.tls_cert or args.password_file):
        build_parser().error(
            "--insecure has no TLS: a certificate or password would be sent in clear"
        )
    if not args.insecure and config.udp_workers > 1:
        build_parser().error("--udp-workers above 1 needs --insecure (protocol 1) for now")
    asyncio.run(run(config))


if __name__ == "__main__":
    main()
