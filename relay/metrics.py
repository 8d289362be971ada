"""Prometheus metrics (``--metrics HOST:PORT``): the relay's counters at ``/metrics``.

Nothing is counted twice and nothing here runs per datagram: a scrape asks the
relay's asyncio thread for a :class:`Snapshot` of the counters it already keeps
(the router's, the workers' latest reports, the control server's) and turns it
into metric families. The only hot-path cost of metrics is the sampled
service-time histogram of the UDP loop (:class:`relay.udp.ServiceTimes`).

The metric names are defined here once, and documented in docs/relay.md from
this list; renaming one is a breaking change for the operator's dashboards.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector

PREFIX = "voicechat_relay_"
SCRAPE_TIMEOUT = 2.0  # seconds a scrape waits for the relay's loop
# Router counters by family: received datagrams by kind, dropped by reason.
KINDS = {"keepalive": "keepalive", "register": "register", "voice_in": "voice"}
DROP = "drop_"
SENT = {
    "forwarded": ("forwarded_total", "Voice datagrams sent to a listener (one per destination)"),
    "echoed": ("echoed_total", "Voice datagrams sent back to their sender (echo mode)"),
    "send_errors": ("send_errors_total", "Failed sendto calls"),
    # A cluster's relay (docs/cluster.md); 0 on a relay alone.
    "mesh_out": ("mesh_sent_total", "Voice datagrams sent to other relays of the cluster"),
    "mesh_in": ("mesh_received_total", "Voice datagrams taken from other relays of the cluster"),
}


@dataclass(slots=True)
class Snapshot:
    """What one scrape reports; built on the relay's thread."""

    datagrams: dict[str, int]  # the router's counters, workers included
    sessions: int
    connections: int
    members: dict[str, int]  # channel -> members
    messages: dict[str, int]  # control messages received by type
    auth_failures: dict[str, int]  # by error code
    refused: dict[str, int]  # connections refused at accept, by reason
    evicted: int
    bans: int
    service: tuple[list[int], int, int] | None  # ServiceTimes.snapshot()
    service_bounds_ns: tuple[int, ...] = field(default=())


class RelayCollector:
    """A prometheus_client collector over ``snapshot``, called on every scrape."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []  # no fixed description: the registry then does not collect at register

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot()
        kinds = CounterMetricFamily(
            PREFIX + "datagrams",
            "UDP datagrams received, by kind (drops excluded)",
            labels=["kind"],
        )
        drops = CounterMetricFamily(
            PREFIX + "dropped", "UDP datagrams dropped, by reason", labels=["reason"]
        )
        for key, value in s.datagrams.items():
            if key in KINDS:
                kinds.add_metric([KINDS[key]], value)
            elif key.startswith(DROP):
                drops.add_metric([key[len(DROP) :]], value)
        yield kinds
        yield drops
        for key, (name, doc) in SENT.items():
            yield CounterMetricFamily(
                PREFIX + name.removesuffix("_total"), doc, value=s.datagrams.get(key, 0)
            )
        yield GaugeMetricFamily(
            PREFIX + "sessions", "Sessions, those in grace included", value=s.sessions
        )
        yield GaugeMetricFamily(
            PREFIX + "connections", "Open control connections", value=s.connections
        )
        yield GaugeMetricFamily(PREFIX + "channels", "Channels", value=len(s.members))
        members = GaugeMetricFamily(
            PREFIX + "channel_members", "Sessions per channel", labels=["channel"]
        )
        for channel, n in s.members.items():
            members.add_metric([channel], n)
        yield members
        yield _labelled(
            PREFIX + "control_messages", "Control messages received, by type", "type", s.messages
        )
        yield _labelled(
            PREFIX + "auth_failures",
            "Auths and reconnects refused, by error code",
            "code",
            s.auth_failures,
        )
        yield _labelled(
            PREFIX + "refused_connections", "Connections refused at accept", "reason", s.refused
        )
        yield CounterMetricFamily(
            PREFIX + "evicted_in_grace", "Sessions in grace removed to make room", value=s.evicted
        )
        yield GaugeMetricFamily(
            PREFIX + "bans", "Bans held (expired ones until purged)", value=s.bans
        )
        if s.service is not None:
            counts, sum_ns, _n = s.service
            buckets: list[tuple[str, float]] = []
            total = 0
            for bound, c in zip(s.service_bounds_ns, counts, strict=False):
                total += c
                buckets.append((_seconds(bound), total))
            buckets.append(("+Inf", sum(counts)))
            yield HistogramMetricFamily(
                PREFIX + "udp_service_seconds",
                "Per-datagram service time of the UDP loop (route and sendto calls), "
                "one datagram in every 64 sampled",
                buckets=buckets,
                sum_value=sum_ns / 1e9,
            )


def _labelled(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _seconds(ns: int) -> str:
    return f"{ns / 1e9:g}"


class MetricsServer:
    """The HTTP endpoint: a registry with the relay's collector and the process's
    (CPU, memory, file descriptors), served by prometheus_client's own thread."""

    def __init__(self, host: str, port: int, snapshot: Callable[[], Snapshot]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RelayCollector(snapshot))
        ProcessCollector(registry=self.registry)
        server, thread = start_http_server(port, host, registry=self.registry)
        self._server: Any = server
        self._thread = thread
        self.port: int = server.server_address[1]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2.0)


def from_loop(loop: asyncio.AbstractEventLoop, build: Callable[[], Snapshot]) -> Snapshot:
    """``build()`` run on ``loop`` (the relay's, which owns what it reads), from another thread."""
    done: concurrent.futures.Future[Snapshot] = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(build())
        except BaseException as exc:
            done.set_exception(exc)

    loop.call_soon_threadsafe(run)
    return done.result(SCRAPE_TIMEOUT)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 host in brackets) as a bind address."""
    host, _sep, port = text.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)
