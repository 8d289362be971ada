"""Wires the relay together: ports, session table, router, UDP loop, control server, timers.

The control side (asyncio, this module's thread) owns the session table. The
UDP side only reads the router's immutable :class:`relay.router.RouteTable`,
which is rebuilt here after every change and swapped in with one reference
store; register pings from the UDP thread come back to the loop through
``call_soon_threadsafe``. Shutdown on SIGINT/SIGTERM: clients get ``bye``, the
UDP loop is stopped and joined, the counters are logged. SIGHUP reloads the
configuration (:meth:`relay.operations.Operations.reload`): what can change
while serving does, the rest is logged as needing a restart.

The operator's side, each optional: the database (:mod:`relay.store`: bans,
channels made at run time, run-time settings), the admin socket
(:mod:`relay.admin_server`) and the metrics endpoint (:mod:`relay.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from relay.admin import Admin
from relay.admin_server import AdminServer
from relay.cluster_router import ClusterRouter, local_fanout
from relay.control_accept import Acceptor
from relay.control_server import ControlServer
from relay.limits import (
    ADDRESS_CHAT_BURST,
    ADDRESS_CHAT_RATE,
    ADDRESS_JOIN_BURST,
    ADDRESS_JOIN_RATE,
    CONNECT_BURST,
    CONNECT_RATE,
    PER_ADDRESS_CONNECTIONS,
    PER_ADDRESS_SESSIONS,
    ControlLimits,
)
from relay.metrics import MetricsServer, Snapshot, from_loop, parse_address
from relay.operations import Operations
from relay.protocol.messages import ChannelInfo
from relay.router import (
    Addr,
    Dests,
    Router,
    RouteTable,
    VoiceLimit,
    add_unbound,
    remove_unbound,
)
from relay.sealed_router import PeerEntry, SealedRouter
from relay.session_table import DEFAULT_CHANNELS, DEFAULT_GRACE, BindResult, SessionTable
from relay.steering import steer_by_sender
from relay.store import Store
from relay.tls import certificate_fingerprint, identity, server_context
from relay.tunnel import TunnelIn
from relay.udp import RCVBUF, ServiceTimes, UdpThread, is_ipv6, open_udp, start_asyncio_udp
from relay.workers import Worker

log = logging.getLogger("relay")

BIND_ATTEMPTS = 10  # with --port 0: tries to find an ephemeral port free for TCP and UDP


@dataclass(slots=True)
class RelayConfig:
    host: str = "0.0.0.0"  # "::" binds IPv6 and IPv4 both (dual stack)
    port: int = 8080
    public_host: str = ""  # the host clients send UDP voice to, if not the one they connect to
    echo: bool = False
    channels: list[ChannelInfo | str] = field(default_factory=lambda: list(DEFAULT_CHANNELS))
    grace: float = DEFAULT_GRACE
    auth_timeout: float = 10.0
    max_output: int = 1024 * 1024
    stats_interval: float = 60.0
    udp: str = "thread"  # or "asyncio": the measured alternative
    udp_rcvbuf: int = RCVBUF
    udp_workers: int = 1  # forwarding threads/processes on the port; >1 adds SO_REUSEPORT processes
    max_clients: int = 2000
    # Per-session cap on voice (datagrams and bytes per second); None: unlimited.
    voice_limit: VoiceLimit | None = field(default_factory=VoiceLimit)
    # Per source address (0: no limit); see relay.limits.
    per_address_connections: int = PER_ADDRESS_CONNECTIONS
    per_address_sessions: int = PER_ADDRESS_SESSIONS
    connect_rate: float = CONNECT_RATE
    connect_burst: float = CONNECT_BURST
    address_chat_rate: float = ADDRESS_CHAT_RATE  # chats/s of one address, all connections
    address_chat_burst: float = ADDRESS_CHAT_BURST
    address_join_rate: float = ADDRESS_JOIN_RATE  # joins/s of one address, all connections
    address_join_burst: float = ADDRESS_JOIN_BURST
    # Security (docs/security.md). insecure: protocol 1, plain TCP and plain voice.
    insecure: bool = False
    tls_cert: str | None = None  # PEM; None: the data directory's self-signed identity
    tls_key: str | None = None  # PEM; None: in tls_cert
    data_dir: str | None = None  # None: relay.tls.default_data_dir()
    password: str | None = None  # None: anyone may join
    log_level: str = "info"
    log_format: str = "text"
    obfuscate_addresses: bool = False
    welcome_text: str = ""
    database: str | None = None  # the store is opened by the caller (a clear start-up error)
    admin_socket: str | None = None
    metrics: str | None = None  # HOST:PORT
    # A cluster (docs/cluster.md): its Redis URL; None: this relay alone, nothing of Redis.
    cluster: str | None = None
    cluster_secret: bytes = b""  # read from --cluster-secret-file by the caller
    relay_id: str = ""  # "": a random one per start
    cluster_host: str = ""  # where clients and relays reach this one; "": --public-host/--host


class StartError(Exception):
    """The relay could not bind what its configuration asks for; ``str()`` is one line."""


class ConfigSource(Protocol):
    """Where a reload gets the configuration, and where run-time settings are kept."""

    def config(self) -> RelayConfig: ...

    def set_setting(self, key: str, text: str) -> Any: ...

    def unset_setting(self, key: str) -> bool: ...

    def runtime_settings(self) -> dict[str, Any]: ...


class Relay:
    """One relay: call :meth:`start`, then :meth:`serve` until :meth:`stop`.

    ``store``: the open database, if any; ``source``: what a reload reads
    (:class:`relay.operations.Operations` keeps both).
    """

    def __init__(
        self, config: RelayConfig, store: Store | None = None, source: ConfigSource | None = None
    ) -> None:
        self.config = config
        self.operations = Operations(self, store, source)
        self.sessions = SessionTable(
            self.operations.channels(),
            config.grace,
            max_sessions=config.max_clients,
            max_per_source=config.per_address_sessions,
            sealed=not config.insecure,
        )
        self.router: Router
        self.sealed: SealedRouter | None = None
        if config.insecure:
            if config.cluster:
                raise ValueError("--cluster needs protocol 2 (no --insecure)")
            self.router = Router(
                echo=config.echo, on_bind=self._bind_from_udp, limit=config.voice_limit
            )
        else:
            media = self.sessions.media_by_id  # shared: it grows with run-time channels
            tunnel_router: SealedRouter | None = None
            if config.cluster:
                if config.udp != "thread":
                    raise ValueError("--cluster needs --udp thread")
                if config.udp_workers > 1:
                    raise ValueError("--cluster runs one UDP loop: --udp-workers 1")
                # Mesh counters from the wall clock: above what this relay's mesh number
                # (or a number Redis gave out again after losing it) ever sent.
                ctr = itertools.count(time.time_ns())
                self.sealed = ClusterRouter(media, config.echo, self._bind_from_udp,
                                            config.voice_limit, ctr=ctr)  # fmt: skip
                tunnel_router = ClusterRouter(media, echo=config.echo, ctr=ctr)
            else:
                self.sealed = SealedRouter(
                    media, echo=config.echo, on_bind=self._bind_from_udp, limit=config.voice_limit
                )
            self.sealed.on_tunnel = self._tunnel_from_udp
            self.router = self.sealed
        self._pending_binds: dict[int, tuple[Addr, bytes]] = {}  # token -> latest ping
        self._pending_lock = threading.Lock()  # UDP thread and loop both touch it
        self.control = ControlServer(
            self.sessions,
            self._rebuild_routes,
            ControlLimits(
                auth_timeout=config.auth_timeout,
                max_output=config.max_output,
                max_connections=config.max_clients,
                per_address_connections=config.per_address_connections,
                per_address_sessions=config.per_address_sessions,
                connect_rate=config.connect_rate,
                connect_burst=config.connect_burst,
                address_chat_rate=config.address_chat_rate,
                address_chat_burst=config.address_chat_burst,
                address_join_rate=config.address_join_rate,
                address_join_burst=config.address_join_burst,
            ),
            password=config.password,
        )
        self.control.welcome_text = config.welcome_text
        self.sessions.udp_host = config.public_host
        self.tunnel: TunnelIn | None = None
        if self.sealed is not None:
            self.tunnel = TunnelIn(
                self.sessions.media_by_id, config.echo, config.voice_limit, router=tunnel_router
            )
            self.control.tunnel_in = self.tunnel
            self.control.udp_send = self._udp_send
        self.operations.load_bans()
        self.admin = Admin(self)
        self._admin_server: AdminServer | None = None
        self._metrics: MetricsServer | None = None
        self.service_times: ServiceTimes | None = ServiceTimes() if config.metrics else None
        self.port = 0
        self._tcp: asyncio.Server | None = None
        self._udp_sock: socket.socket | None = None
        self._udp_thread: UdpThread | None = None
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._workers: list[Worker] = []
        self._acceptor: Acceptor | None = None
        self._media_sent: dict[int, bytes] = {}  # the media keys the workers were given
        # Register answers waiting for the workers to apply their routes: (updates sent
        # to each worker, the answer, the address).
        self._answers: deque[tuple[list[int], bytes, Addr]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = asyncio.Event()
        self.cluster: Any = None  # relay.cluster.Cluster, imported only with --cluster
        self.fingerprint = ""

    async def start(self) -> None:
        """Bind TCP and UDP on the same port and start serving both."""
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        ssl_ctx = None
        if not cfg.insecure:
            data_dir = Path(cfg.data_dir) if cfg.data_dir else None
            cert, key, created = identity(cfg.tls_cert, cfg.tls_key, data_dir)
            ssl_ctx = server_context(cert, key)
            self.fingerprint = certificate_fingerprint(cert)
            log.info(
                "TLS certificate %s%s, SHA-256 fingerprint %s",
                cert,
                " (created now, self-signed)" if created else "",
                certificate_fingerprint(cert),
            )
        for attempt in range(BIND_ATTEMPTS):
            server = await self._listen(ssl_ctx)
            port = server.sockets[0].getsockname()[1]
            try:
                self._udp_sock = open_udp(
                    cfg.host, port, cfg.udp_rcvbuf, reuse_port=cfg.udp_workers > 1
                )
            except OSError as exc:
                server.close()
                await server.wait_closed()
                if cfg.port != 0 or exc.errno != errno.EADDRINUSE or attempt == BIND_ATTEMPTS - 1:
                    raise
                continue
            self._tcp, self.port = server, port
            break
        assert self._udp_sock is not None and self._tcp is not None
        if self.sealed is not None and cfg.udp_workers > 1 and cfg.udp == "thread":
            # Every datagram of a session to the loop that holds its replay window.
            steer_by_sender(self._udp_sock, cfg.udp_workers)
        self.sessions.udp_port = self.port
        if cfg.cluster:
            await self._join_cluster()
        if cfg.udp == "asyncio":
            self._udp_transport = await start_asyncio_udp(self._udp_sock, self.router)
        else:
            self._udp_thread = UdpThread(self._udp_sock, self.router, self.service_times)
            self._udp_thread.start()
            for _ in range(cfg.udp_workers - 1):
                w = Worker(
                    cfg.host,
                    self.port,
                    cfg.udp_rcvbuf,
                    cfg.echo,
                    self._bind,
                    cfg.voice_limit,
                    sealed=self.sealed is not None,
                    on_tunnel=self.control.tunnel_out,
                )
                self._workers.append(w)
            for w in self._workers:  # the whole socket group before anyone is served
                w.wait_ready()
                self._loop.add_reader(w.conn.fileno(), self._from_worker, w)
        if cfg.admin_socket:
            self._admin_server = AdminServer(cfg.admin_socket, self.admin.handle)
            await self._admin_server.start()
        if cfg.metrics:
            host, mport = parse_address(cfg.metrics)
            loop = self._loop
            self._metrics = MetricsServer(host, mport, lambda: from_loop(loop, self.snapshot))
            log.info("metrics on http://%s:%d/metrics", host, self._metrics.port)
        await self._tcp.start_serving()  # now that every forwarding loop runs
        mode = "echo" if cfg.echo else "relay"
        lim = cfg.voice_limit
        log.info(
            "%s mode, %s, %s, udp=%s, loops=%d, channels=%s, grace=%ss, voice limit %s",
            mode,
            "INSECURE: plain TCP and plain voice (protocol 1)"
            if cfg.insecure
            else "TLS control and sealed voice (protocol 2)",
            "password required" if cfg.password is not None else "no password",
            cfg.udp,
            1 + len(self._workers),
            list(self.sessions.channels),
            cfg.grace,
            "off"
            if lim is None
            else f"{lim.datagrams_per_s:g} datagrams/s, {lim.bytes_per_s:g} bytes/s, "
            f"burst {lim.burst_s:g} s per session",
        )

    async def _listen(self, ssl_ctx: ssl.SSLContext | None) -> asyncio.Server:
        """The control port's listener. With TLS, each connection's first byte is looked
        at first (:mod:`relay.control_accept`): a protocol-1 client is told to upgrade."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        if ssl_ctx is None:
            factory: Callable[[], asyncio.BaseProtocol] = _stream_factory(self.control.handle)
        else:
            self._acceptor = Acceptor(
                ssl_ctx, self.control.handle, cfg.auth_timeout, self.control.count_refused
            )
            factory = self._acceptor
        if is_ipv6(cfg.host):  # asyncio would bind it IPv6 only
            sock = _dual_stack_listener(cfg.host, cfg.port)
            return await loop.create_server(factory, sock=sock, start_serving=False)
        return await loop.create_server(
            factory, cfg.host, cfg.port, reuse_address=True, start_serving=False
        )

    async def _join_cluster(self) -> None:
        """Join the cluster before the first client is served: its user ids and media keys
        come from there. Raises OSError (a start-up error) if Redis cannot be reached."""
        from redis.exceptions import RedisError

        from relay.cluster import Cluster, ClusterConfig

        cfg = self.config
        assert isinstance(self.sealed, ClusterRouter) and cfg.cluster
        host = cfg.cluster_host or cfg.public_host or cfg.host
        if host in ("0.0.0.0", "::", ""):
            raise OSError("--cluster needs --cluster-host (or --public-host): where the "
                          "other relays and failing-over clients reach this one")  # fmt: skip
        where = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        relay_id = cfg.relay_id or secrets.token_hex(6)
        self.cluster = Cluster(
            ClusterConfig(
                cfg.cluster, cfg.cluster_secret, relay_id, where, where, self.fingerprint, cfg.grace
            ),
            self.sessions,
            self.control,
            [
                r
                for r in (self.sealed, self.tunnel and self.tunnel.router)
                if isinstance(r, ClusterRouter)
            ],
        )
        try:
            await self.cluster.start()
        except (RedisError, OSError) as exc:
            await self.cluster.close()
            self.cluster = None
            raise OSError(f"the cluster's Redis at {cfg.cluster}: {exc}") from None
        log.info("in the cluster at %s as relay %s (mesh number %d), reached at %s",
                 _redacted(cfg.cluster), relay_id, self.cluster.num, where)  # fmt: skip

    async def serve(self) -> None:
        """Run the timers until :meth:`stop` is called, then shut everything down."""
        timers = [
            asyncio.create_task(self._expiry_timer()),
            asyncio.create_task(self._stats_timer()),
            asyncio.create_task(self.operations.ban_timer()),
        ]
        try:
            await self._stopped.wait()
        finally:
            for t in timers:
                t.cancel()
            await asyncio.gather(*timers, return_exceptions=True)
            await self.close()

    def stop(self) -> None:
        self._stopped.set()

    async def close(self) -> None:
        if self.cluster is not None:
            await self.cluster.close()  # first: the others stop sending here at once
        if self._admin_server is not None:
            await self._admin_server.close()
            self._admin_server = None
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._tcp is not None:
            self._tcp.close()
        if self._acceptor is not None:
            await self._acceptor.close()
        await self.control.shutdown()
        if self._tcp is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._tcp.wait_closed(), 2.0)
            self._tcp = None
        if self._udp_thread is not None:
            self._udp_thread.close()
            self._udp_thread = None
        for w in self._workers:
            if self._loop is not None and not w.conn.closed:
                self._loop.remove_reader(w.conn.fileno())
            w.stop()
        if self._udp_transport is not None:
            self._udp_transport.close()
            self._udp_transport = None
        elif self._udp_sock is not None:
            self._udp_sock.close()
        log.info(
            "counters at exit: %s sessions=%d %s",
            self._counter_line(),
            len(self.sessions),
            self._control_line(),
        )
        if self._workers:
            shares = [self.router.counters.forwarded] + [
                w.counters["forwarded"] for w in self._workers
            ]
            log.info("forwarded by loop (this process first, then each worker): %s", shares)

    # --- the operator's side -------------------------------------------------------------

    def forwarded_total(self) -> int:
        """Datagrams forwarded so far by every loop (workers as of their last report)."""
        return self.router.counters.forwarded + sum(w.counters["forwarded"] for w in self._workers)

    def snapshot(self) -> Snapshot:
        """The counters for one metrics scrape (on the loop's thread, which owns them)."""
        total = self.router.counters.as_dict()
        for w in self._workers:
            for k, v in w.counters.items():
                total[k] = total.get(k, 0) + v
        times = self.service_times
        c = self.control
        return Snapshot(
            datagrams=total,
            sessions=len(self.sessions),
            connections=c.connection_count,
            members={ch: len(m) for ch, m in self.sessions.channels.items()},
            messages=dict(c.messages),
            auth_failures=dict(c.auth_failures),
            refused=dict(c.refused),
            evicted=self.sessions.evicted,
            bans=len(c.bans),
            service=None if times is None else times.snapshot(),
            service_bounds_ns=() if times is None else times.bounds_ns,
        )

    def set_voice_limit(self, limit: VoiceLimit | None) -> None:
        """A new per-session voice limit for every forwarding loop (a reload)."""
        self.router.set_limit(limit)
        if self.tunnel is not None:  # voice through the TCP tunnel is held to it too
            self.tunnel.limit = limit
        for w in self._workers:
            w.set_limit(limit)

    # --- glue between the sides ---------------------------------------------------------

    def _rebuild_routes(self) -> None:
        added = self.sessions.take_added()
        gone = self.sessions.take_gone()
        dirty = self.sessions.take_dirty()
        peers: list[PeerEntry] = []
        removed: list[int] = []
        if self.sealed is not None:  # keys and windows first: a route without them drops
            peers = self.sessions.peer_entries(dirty, (token for token, _u, _c in added))
            removed = self.sessions.take_removed()
            self.sealed.update_peers(peers, removed)
            if self.tunnel is not None:
                self.tunnel.update_peers(peers, removed)
        table = self.router.table
        if gone:  # first: a token may have gone and come back with a new session
            table = remove_unbound(table, gone)
        if added:
            table = add_unbound(table, added)
        entries = self.sessions.route_entries(dirty)
        self.router.table = RouteTable.update(
            table, dirty, entries, self.sessions.tunnelled, self.sessions.silenced
        )
        if self.tunnel is not None:
            self.tunnel.router.table = self.router.table
        if isinstance(self.sealed, ClusterRouter):  # voice from other relays: channel-wide
            key_ids = {ch: kid for ch, (kid, _k) in self.sessions.media_keys.items()}
            self.sealed.local = local_fanout(self.router.table, key_ids)
            if self.tunnel is not None:
                self.tunnel.router.local = self.sealed.local  # type: ignore[attr-defined]
        if self._workers:  # they know channel updates only: these sessions' channels are redone
            dirty |= {channel for _token, _uid, channel in added}
            dirty |= {channel for _token, channel in gone}
            entries = self.sessions.route_entries(dirty)
            media = self.sessions.media_by_id
            send_media = self.sealed is not None and media != self._media_sent
            if send_media:
                self._media_sent = dict(media)
            for w in self._workers:
                if self.sealed is not None:  # keys first, as for this process's router
                    if send_media:
                        w.set_media(media)
                    w.update_peers(peers, removed)
                w.update(dirty, entries, self.sessions.silenced, self.sessions.tunnelled)

    def _tunnel_from_udp(self, data: bytes, tokens: tuple[int, ...]) -> None:
        """From the UDP thread: voice for listeners that hear through the TCP tunnel."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is already closed: shutting down
            self._loop.call_soon_threadsafe(self.control.tunnel_out, data, tokens)

    def _udp_send(self, data: bytes, dests: Dests) -> None:
        """From the loop: tunnelled voice for listeners on UDP (one sendto each)."""
        sock = self._udp_sock
        if sock is None or sock.fileno() < 0:
            return
        for dest in dests:
            try:
                sock.sendto(data, dest)
            except OSError:
                self.router.counters.send_errors += 1

    def _bind_from_udp(self, token: int, addr: Addr, ping: bytes) -> None:
        # Called on the UDP thread (or the loop, in asyncio mode): hop to the loop, with at
        # most one callback per token waiting there, carrying the latest address; a
        # client flapping between source ports cannot flood the loop's queue.
        assert self._loop is not None
        with self._pending_lock:
            fresh = token not in self._pending_binds
            self._pending_binds[token] = (addr, ping)
        if fresh:
            with contextlib.suppress(RuntimeError):  # the loop is already closed: shutting down
                self._loop.call_soon_threadsafe(self._bind_pending, token)

    def _bind_pending(self, token: int) -> None:
        with self._pending_lock:
            pending = self._pending_binds.pop(token, None)
        if pending is not None:
            self._bind(token, *pending)

    def _from_worker(self, worker: Worker) -> None:
        alive = worker.on_readable()
        if self._answers:
            self._answer_applied()
        if not alive:
            assert self._loop is not None
            self._loop.remove_reader(worker.conn.fileno())
            worker.conn.close()
            worker.process.join(1.0)
            log.error("UDP worker %d exited (%s)", worker.process.pid, worker.process.exitcode)
            if self.sealed is not None:
                # The kernel moves another socket into its place in the group: sessions
                # would meet a replay window that never saw them. Fail closed.
                log.error("sealed voice cannot keep its replay windows without it: stopping")
                self.stop()

    def _bind(self, token: int, addr: Addr, ping: bytes) -> None:
        result = self.sessions.bind_udp(token, addr, self.control.clock())
        if result is BindResult.UNKNOWN_TOKEN:
            return  # the session ended between the ping and now
        if result is BindResult.RATE_LIMITED:
            self.router.counters.drop_rebind_limited += 1
            return
        if result is BindResult.BOUND:
            self._rebuild_routes()
            if self._workers:  # every loop routes the new address before the answer
                self._answers.append(([w.sent for w in self._workers], ping, addr))
                self._answer_applied()
                return
        # Answer only now that the new table is installed: the answer promises routing.
        self._answer(ping, addr)

    def _answer(self, ping: bytes, addr: Addr) -> None:
        if self._udp_sock is not None and self._udp_sock.fileno() >= 0:
            with contextlib.suppress(OSError):
                self._udp_sock.sendto(ping, addr)

    def _answer_applied(self) -> None:
        """Answer the register pings whose routes every worker has applied by now."""
        workers = self._workers
        while self._answers:
            sent, ping, addr = self._answers[0]
            if any(w.applied < s for w, s in zip(workers, sent, strict=True)):
                return  # answers go in order; a dead worker's wait ends with the relay
            self._answers.popleft()
            self._answer(ping, addr)

    async def _expiry_timer(self) -> None:
        while True:
            deadline = self.sessions.next_deadline()
            now = self.control.clock()
            delay = 1.0 if deadline is None else min(1.0, max(0.01, deadline - now))
            await asyncio.sleep(delay)
            self.control.expire()

    def log_counters(self) -> None:
        """One ``counters:`` log line (also on SIGUSR1, for operators and the load bench)."""
        log.info(
            "counters: %s sessions=%d connections=%d %s",
            self._counter_line(),
            len(self.sessions),
            self.control.connection_count,
            self._control_line(),
        )

    def _control_line(self) -> str:
        """The control side's counters: refused connections, evictions, presence fan-out."""
        c = self.control
        fan = c.fanout.counters
        parts = {f"refused_{k}": v for k, v in c.refused.items()}
        parts |= {f"auth_{k}": v for k, v in c.auth_refused.items()}
        parts |= {f"address_rate_limited_{k}": v for k, v in c.rate_limited.items()}
        parts |= {
            "evicted_in_grace": self.sessions.evicted,
            "key_rotations": self.sessions.rotations,
            "key_rotations_skipped": self.sessions.rotations_skipped,
            "presence_batches": fan.batches,
            "presence_snapshots": fan.snapshots,
            "presence_fell_behind": fan.fell_behind,
        }
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def _counter_line(self) -> str:
        """This process's counters plus the latest report of every worker."""
        total = self.router.counters.as_dict()
        if self.sealed is not None:
            total |= {f"window_{k}": v for k, v in self.sealed.window_totals().items()}
        if self.tunnel is not None:
            total |= {f"tunnel_{k}": v for k, v in self.tunnel.line().items()}
            total |= {f"tunnel_{k}": v for k, v in self.control.tunnel_counts.items()}
        for w in self._workers:
            for k, v in w.counters.items():
                total[k] = total.get(k, 0) + v
            for k, v in w.windows.items():
                total[f"window_{k}"] = total.get(f"window_{k}", 0) + v
        if self.cluster is not None:
            total |= {f"cluster_{k}": v for k, v in self.cluster.line().items()}
        return " ".join(f"{k}={v}" for k, v in total.items())

    async def _stats_timer(self) -> None:
        while True:
            await asyncio.sleep(self.config.stats_interval)
            self.log_counters()


async def run(
    config: RelayConfig, store: Store | None = None, source: ConfigSource | None = None
) -> None:
    """Start a relay, print the listening line, serve until SIGINT or SIGTERM.

    SIGUSR1 logs the counters at once; SIGHUP reloads the configuration from ``source``.
    """
    relay = Relay(config, store, source)
    try:
        await relay.start()
    except OSError as exc:  # a port or socket path in use, an address not on this host
        await relay.close()
        raise StartError(f"cannot start: {exc}") from None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, relay.stop)
    loop.add_signal_handler(signal.SIGUSR1, relay.log_counters)
    loop.add_signal_handler(signal.SIGHUP, relay.operations.on_sighup)
    public = f", advertising {config.public_host} for UDP" if config.public_host else ""
    print(
        f"relay listening on {config.host} tcp={relay.port} udp={relay.port}{public}",
        file=sys.stdout,
        flush=True,
    )
    await relay.serve()


def _stream_factory(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> Callable[[], asyncio.BaseProtocol]:
    """What ``asyncio.start_server`` builds per connection: a reader and its protocol."""

    def factory() -> asyncio.BaseProtocol:
        loop = asyncio.get_running_loop()
        return asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), handle, loop=loop)

    return factory


def _dual_stack_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to the IPv6 ``host`` that takes IPv4 clients too (IPV6_V6ONLY
    off: they arrive as ``::ffff:a.b.c.d``); asyncio listens on it."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _redacted(url: str) -> str:
    """``url`` without its password, for the log."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return url
    user = creds.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{host}"
