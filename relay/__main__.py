"""``python -m relay`` / ``voicechat-relay``: the standalone relay daemon."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from relay import config_file
from relay.cluster_core import MAX_RELAY_ID
from relay.config_file import ConfigError
from relay.limits import (
    ADDRESS_CHAT_BURST,
    ADDRESS_CHAT_RATE,
    ADDRESS_JOIN_BURST,
    ADDRESS_JOIN_RATE,
    CONNECT_BURST,
    CONNECT_RATE,
    PER_ADDRESS_CONNECTIONS,
    PER_ADDRESS_SESSIONS,
)
from relay.log_format import LOG_FORMATS, configure_logging
from relay.protocol.errors import ProtocolError
from relay.protocol.mesh_datagram import MIN_SECRET
from relay.protocol.messages import (
    MAX_CHANNEL,
    MAX_PASSWORD,
    PROTOCOL,
    Auth,
    ChannelInfo,
    decode_message,
    encode_message,
)
from relay.router import (
    DEFAULT_BURST_S,
    DEFAULT_BYTES_PER_S,
    DEFAULT_DATAGRAMS_PER_S,
    VoiceLimit,
)
from relay.server import RelayConfig, StartError, run
from relay.session_table import DEFAULT_CHANNELS, DEFAULT_GRACE
from relay.store import Store, StoreError
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


# The keys `voicechat-admin set` may change (the reloadable ones but the channel list,
# which has its own verbs): the configuration keys, as in the file.
RUNTIME_KEYS = frozenset(
    {
        "grace", "auth_timeout", "stats_interval", "max_clients", "max_per_address",
        "max_sessions_per_address", "connect_rate", "connect_burst", "address_chat_rate",
        "address_chat_burst", "address_join_rate", "address_join_burst", "voice_datagrams",
        "voice_bytes", "voice_burst", "no_voice_limit", "log_level", "obfuscate_addresses",
        "welcome_text",
    }
)  # fmt: skip


def _host_port(value: str) -> str:
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdecimal() or not 0 <= int(port) <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line; each optional argument is also a key of the configuration file
    (relay/config_file.py), named after its destination."""
    ap = argparse.ArgumentParser(
        prog="voicechat-relay",
        description="Voice chat relay: TCP control server and UDP voice router on one port.",
    )
    ap.add_argument(
        "--config",
        metavar="FILE",
        help="a TOML file with any of these options as keys (flags given here win); "
        "see docs/relay.example.toml",
    )
    ap.add_argument(
        "--host",
        default="0.0.0.0",
        help="address to bind (default 0.0.0.0, every IPv4 interface; :: for IPv6 and IPv4)",
    )
    ap.add_argument(
        "--public-host",
        default="",
        metavar="HOST",
        help="the host name or address clients send UDP voice to, when it is not the one "
        "they connect to (a relay behind NAT or a TCP proxy); default: that one",
    )
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
        "--address-chat-rate",
        type=_rate,
        default=ADDRESS_CHAT_RATE,
        metavar="R",
        help="chat messages per second from one source address, all its connections "
        f"together; 0 = no limit; default {ADDRESS_CHAT_RATE:g}",
    )
    ap.add_argument(
        "--address-chat-burst",
        type=_rate,
        default=ADDRESS_CHAT_BURST,
        metavar="N",
        help=f"chat messages one address may send at once above the rate; "
        f"default {ADDRESS_CHAT_BURST:g}",
    )
    ap.add_argument(
        "--address-join-rate",
        type=_rate,
        default=ADDRESS_JOIN_RATE,
        metavar="R",
        help="channel joins per second from one source address, all its connections "
        f"together; 0 = no limit; default {ADDRESS_JOIN_RATE:g}",
    )
    ap.add_argument(
        "--address-join-burst",
        type=_rate,
        default=ADDRESS_JOIN_BURST,
        metavar="N",
        help=f"channel joins one address may make at once above the rate; "
        f"default {ADDRESS_JOIN_BURST:g}",
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
    ap.add_argument(
        "--log-format",
        default="text",
        choices=LOG_FORMATS,
        help="text (default) or json: one JSON object per line, for log shippers",
    )
    ap.add_argument(
        "--obfuscate-addresses",
        action="store_true",
        help="log a keyed hash of each client address instead of the address",
    )
    ap.add_argument(
        "--welcome-text",
        default="",
        metavar="TEXT",
        help="a chat from the server each new session gets after its welcome",
    )
    ap.add_argument(
        "--database",
        metavar="PATH",
        help="SQLite file for what survives a restart: channels made at run time, bans, "
        "settings (default: none, all in memory)",
    )
    ap.add_argument(
        "--admin-socket",
        metavar="PATH",
        help="Unix socket for voicechat-admin; its file permissions are the access "
        "control (default: none)",
    )
    ap.add_argument(
        "--metrics",
        type=_host_port,
        metavar="HOST:PORT",
        help="serve Prometheus metrics over HTTP at HOST:PORT/metrics (default: off)",
    )
    _cluster_flags(ap)
    return ap


def _cluster_flags(ap: argparse.ArgumentParser) -> None:
    """A cluster of relays on Redis (docs/cluster.md)."""
    cl = ap.add_argument_group("cluster (docs/cluster.md)")
    cl.add_argument("--cluster", metavar="URL", help="join the cluster whose Redis is at URL "
                    "(redis://HOST:PORT/DB, or rediss:// for TLS); default: none, this relay "
                    "alone")  # fmt: skip
    cl.add_argument("--cluster-secret-file", metavar="FILE", help="the cluster secret (its "
                    "first line, at least 16 bytes), the same on every relay: it "
                    "authenticates relay-to-relay voice")  # fmt: skip
    cl.add_argument("--relay-id", default="", metavar="ID", help="this relay's name in the "
                    "cluster (default: a random one per start)")  # fmt: skip
    cl.add_argument("--cluster-host", default="", metavar="HOST", help="where the other relays "
                    "and failing-over clients reach this one (default: --public-host, else "
                    "--host)")  # fmt: skip


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


def read_secret(path: str, what: str = "password file") -> str:
    """The first line of a password or secret file; ValueError saying what is wrong
    (unreadable, not UTF-8, an empty first line)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{what}: {exc}") from None
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path}: not UTF-8 text") from None
    if not lines or not lines[0]:
        raise ValueError(f"{what} {path}: the first line is empty")
    return lines[0]


def read_password(path: str) -> str:
    """The server password: :func:`read_secret`, and one a client can send (the rules of
    ``auth.password``: at most MAX_PASSWORD characters, no control character), or a
    ValueError; else the relay would start and refuse every client as malformed."""
    password = read_secret(path)
    try:
        decode_message(encode_message(Auth(name="x", version=PROTOCOL, password=password))[4:])
    except ProtocolError:
        raise ValueError(
            f"password file {path}: a client cannot send this password (at most "
            f"{MAX_PASSWORD} characters, no control characters)"
        ) from None
    return password


def _read(read: Callable[[str], str], path: str, error: Callable[[str], Any]) -> str:
    try:
        return read(path)
    except ValueError as exc:
        error(str(exc))
        raise


def config_from(ns: argparse.Namespace, error: Callable[[str], Any]) -> RelayConfig:
    """The relay's configuration from merged options; ``error`` is called on a bad one."""
    if not 0 <= ns.port <= 0xFFFF:
        error("port must be 0..65535")
    voice_limit = None
    if not ns.no_voice_limit:
        try:
            voice_limit = VoiceLimit(ns.voice_datagrams, ns.voice_bytes, ns.voice_burst)
        except ValueError as exc:
            error(str(exc))
    if len(ns.public_host) > 253 or any(c.isspace() or not c.isprintable() for c in ns.public_host):
        error("--public-host must be a host name or an address (at most 253 characters)")
    if ns.insecure and (ns.tls_cert or ns.password_file):
        error("--insecure has no TLS: a certificate or password would be sent in clear")
    secret = b""
    if ns.cluster:
        if ns.insecure:
            error("--cluster needs protocol 2: TLS and sealed voice (no --insecure)")
        if ns.udp != "thread":
            error("--cluster needs --udp thread")
        if ns.udp_workers > 1:
            error("--cluster runs one UDP loop: --udp-workers 1")
        if not ns.cluster_secret_file:
            error("--cluster needs --cluster-secret-file")
        secret = _read(
            lambda p: read_secret(p, "cluster secret file"), ns.cluster_secret_file, error
        ).encode()
        if len(secret) < MIN_SECRET:
            error(f"the cluster secret must be at least {MIN_SECRET} bytes")
        if len(ns.relay_id) > MAX_RELAY_ID:
            error(f"--relay-id is at most {MAX_RELAY_ID} characters")
    channels: list[ChannelInfo | str] = [
        c if isinstance(c, ChannelInfo) else ChannelInfo(c) for c in ns.channels or ()
    ]
    return RelayConfig(
        host=ns.host,
        port=ns.port,
        public_host=ns.public_host,
        echo=ns.echo,
        channels=channels or [ChannelInfo(c) for c in DEFAULT_CHANNELS],
        grace=ns.grace,
        auth_timeout=ns.auth_timeout,
        stats_interval=ns.stats_interval,
        udp=ns.udp,
        udp_rcvbuf=ns.udp_rcvbuf,
        udp_workers=max(1, ns.udp_workers) if ns.udp == "thread" else 1,
        max_clients=ns.max_clients,
        voice_limit=voice_limit,
        per_address_connections=ns.max_per_address,
        per_address_sessions=ns.max_sessions_per_address,
        connect_rate=ns.connect_rate,
        connect_burst=ns.connect_burst,
        address_chat_rate=ns.address_chat_rate,
        address_chat_burst=ns.address_chat_burst,
        address_join_rate=ns.address_join_rate,
        address_join_burst=ns.address_join_burst,
        log_level=ns.log_level,
        log_format=ns.log_format,
        obfuscate_addresses=ns.obfuscate_addresses,
        welcome_text=ns.welcome_text,
        database=ns.database,
        admin_socket=ns.admin_socket,
        metrics=ns.metrics,
        insecure=ns.insecure,
        tls_cert=ns.tls_cert,
        tls_key=ns.tls_key,
        data_dir=ns.data_dir,
        password=_read(read_password, ns.password_file, error) if ns.password_file else None,
        cluster=ns.cluster or None,
        cluster_secret=secret,
        relay_id=ns.relay_id,
        cluster_host=ns.cluster_host,
    )


class Settings:
    """Where the configuration comes from, read again on every reload.

    Defaults, then the file, then the flags, then what the operator set at run
    time (stored in the database, as mumble-server keeps its own): the last word
    is the operator's, until ``voicechat-admin unset`` gives it back to the file.
    """

    def __init__(self, argv: Sequence[str] | None) -> None:
        self.parser = build_parser()
        self.argv = list(sys.argv[1:] if argv is None else argv)
        self.path: str | None = self.parser.parse_args(self.argv).config
        self.store: Store | None = None
        self._memory: dict[str, Any] = {}  # run-time settings when there is no database

    def options(self) -> argparse.Namespace:
        """The merged options; raises ConfigError for a bad file or stored setting."""
        ns = config_file.merge(self.parser, self.argv, self.path)
        where = f"{self.store.path} (settings)" if self.store else "run-time settings"
        for dest, value in config_file.parse(self.runtime_settings(), self.parser, where).items():
            setattr(ns, dest, value)
        return ns

    def runtime_settings(self) -> dict[str, Any]:
        return self.store.settings() if self.store is not None else dict(self._memory)

    def set_setting(self, key: str, text: str) -> Any:
        """Keep ``key`` = ``text`` (checked as the key's flag would check it); the value."""
        if key not in RUNTIME_KEYS:
            raise ConfigError(
                f"{key!r} cannot be set at run time; one of {', '.join(sorted(RUNTIME_KEYS))}"
                " (anything else: change the configuration file and restart)"
            )
        value = config_file.from_text(self.parser, key, text)
        if self.store is not None:
            self.store.set_setting(key, value)
        else:
            self._memory[key] = value
        return value

    def unset_setting(self, key: str) -> bool:
        if self.store is not None:
            return self.store.clear_setting(key)
        return self._memory.pop(key, None) is not None

    def config(self) -> RelayConfig:
        """The configuration as it is now (ConfigError if it cannot be used)."""

        def error(msg: str) -> None:
            raise ConfigError(f"{self.path or 'command line'}: {msg}")

        return config_from(self.options(), error)


def main(argv: Sequence[str] | None = None) -> None:
    settings = Settings(argv)
    # Bad flags exit through argparse's usage message; a bad file, stored setting or
    # database with one line naming it and status 2.
    try:
        ns = settings.options()
        config_from(ns, settings.parser.error)
        if ns.database is not None:
            settings.store = Store(Path(ns.database))
        config = settings.config()
    except (ConfigError, StoreError) as exc:
        print(f"voicechat-relay: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(config.log_level, config.log_format, config.obfuscate_addresses)
    try:
        asyncio.run(run(config, store=settings.store, source=settings))
    except StartError as exc:  # status 1: unlike a bad file, a restart may help
        print(f"voicechat-relay: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        if settings.store is not None:
            settings.store.close()


if __name__ == "__main__":
    main()
